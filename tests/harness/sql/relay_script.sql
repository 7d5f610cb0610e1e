-- Run with ON_ERROR_STOP off: DDL, DML, a committed and an aborted transaction, errors,
-- a notice, a multi-statement line, and server-side prepared statements.
CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) DEFAULT 0);
INSERT INTO accounts VALUES (1, 'ann', 100), (2, 'bob', 50.5);
INSERT INTO accounts (id, owner) SELECT g, 'user' || g FROM generate_series(3, 20) g;
BEGIN;
UPDATE accounts SET balance = balance - 10 WHERE id = 1;
UPDATE accounts SET balance = balance + 10 WHERE id = 2;
COMMIT;
BEGIN;
INSERT INTO accounts VALUES (21, 'carol', 1);
SELECT 1 / 0;
SELECT 'not reached';
ROLLBACK;
INSERT INTO accounts VALUES (1, 'duplicate');
SELECT no_such_column FROM accounts;
DO $$ BEGIN RAISE NOTICE 'notice from plpgsql: %', 42; END $$;
CREATE VIEW rich AS SELECT owner, balance FROM accounts WHERE balance > 0 ORDER BY balance DESC;
SELECT * FROM rich;
\echo between statements
SELECT 1 AS a \; SELECT 2 AS b;
PREPARE q(int) AS SELECT owner FROM accounts WHERE id = $1;
EXECUTE q(2);
DEALLOCATE q;
SELECT count(*), sum(balance) FROM accounts;
SELECT id, owner FROM accounts WHERE id > 17 ORDER BY id;
DROP VIEW rich;
