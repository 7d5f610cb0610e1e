-- 20,000 rows with the awkward values COPY has to escape: commas, quotes, tabs,
-- newlines, backslashes, NULL vs empty string, non-ASCII.
CREATE TABLE src (id int PRIMARY KEY, name text, note text, amount numeric, created date);
INSERT INTO src VALUES
  (1, 'plain', NULL, 1.5, '2024-01-01'),
  (2, 'comma, "quoted"', E'tab\there', -2, NULL),
  (3, E'line\nbreak', E'back\\slash', 0, '1999-12-31'),
  (4, 'ünïcödé', '', 1e10, '2000-02-29');
INSERT INTO src SELECT g, 'row ' || g, md5(g::text), g / 7.0, date '2020-01-01' + g
  FROM generate_series(5, 20000) g;
CREATE TABLE csv_copy (LIKE src);
CREATE TABLE text_copy (LIKE src);
CREATE TABLE stdin_copy (LIKE src);
