SELECT 42::int4 AS i4, 9223372036854775807::int8 AS i8, 3.14159::numeric(10,5) AS num,
       'héllo, wörld'::text AS txt, true AS flag, NULL::text AS nothing,
       '2024-02-29 13:45:01.123456+00'::timestamptz AS ts, '\xdeadbeef'::bytea AS bin,
       ARRAY[1,2,3] AS arr, '{"k": [1, null]}'::jsonb AS doc, 1.5::float8 AS f8, n
FROM generate_series(1, 3) AS n
