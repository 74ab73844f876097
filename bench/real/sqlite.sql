-- bench/real/sqlite.sql: the sqlite3 real-program workload of bench/run.py.
--   sqlite3 -batch -bail :memory: ".read bench/real/sqlite.sql"
-- An in-memory database (every page lives in malloc'd memory): 300k orders
-- and 60k customers inserted in one transaction each, three indexes, joins,
-- GROUP BYs, a window function, a big sort, updates and deletes.  Each
-- query's result is stored in the table r; the last line printed is
-- "ok <digest>" over all of them (the harness compares it across
-- allocators), nothing else is printed.
PRAGMA cache_size = -131072;
PRAGMA temp_store = MEMORY;

CREATE TABLE r (id INTEGER PRIMARY KEY, v TEXT);
CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, region INTEGER, note TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER NOT NULL, amount INTEGER,
                     item TEXT, day INTEGER, memo TEXT);

BEGIN;
WITH RECURSIVE c(i, x) AS (
  SELECT 1, 12345
  UNION ALL
  SELECT i + 1, (x * 1103515245 + 12345) % 2147483648 FROM c WHERE i < 60000)
INSERT INTO customer
SELECT i, 'cust-' || printf('%06d', i) || '-' || substr('abcdefghijklmnopqrstuvwxyz', 1 + x % 20, 1 + x % 7),
       x % 37, CASE WHEN i % 11 = 0 THEN NULL ELSE hex(x) || ' note ' || (x % 1000) END
FROM c;
COMMIT;

BEGIN;
WITH RECURSIVE o(i, x) AS (
  SELECT 1, 987654321
  UNION ALL
  SELECT i + 1, (x * 1103515245 + 12345) % 2147483648 FROM o WHERE i < 300000)
INSERT INTO orders
SELECT i, 1 + x % 60000, x % 100000, 'item-' || (x % 913), (x / 7) % 3650,
       substr('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod', 1, 5 + x % 60)
FROM o;
COMMIT;

CREATE INDEX orders_customer ON orders(customer);
CREATE INDEX orders_item_day ON orders(item, day);
CREATE INDEX customer_region ON customer(region, name);

INSERT INTO r(v) SELECT 'counts ' || (SELECT count(*) FROM customer) || ' ' || (SELECT count(*) FROM orders)
       || ' ' || (SELECT sum(amount) FROM orders) || ' ' || (SELECT sum(length(memo)) FROM orders);

INSERT INTO r(v) SELECT group_concat(x, ';') FROM (
  SELECT c.region || ',' || count(*) || ',' || sum(o.amount) || ',' || min(o.amount) || ',' || max(o.amount) AS x
  FROM orders o JOIN customer c ON c.id = o.customer
  GROUP BY c.region ORDER BY c.region);

INSERT INTO r(v) SELECT group_concat(x, ';') FROM (
  SELECT item || ',' || count(*) || ',' || printf('%.4f', avg(amount)) AS x
  FROM orders GROUP BY item ORDER BY count(*) DESC, item LIMIT 50);

INSERT INTO r(v) SELECT group_concat(x, ';') FROM (
  SELECT c.name || ',' || t.total AS x
  FROM (SELECT customer, sum(amount) AS total FROM orders GROUP BY customer) t
  JOIN customer c ON c.id = t.customer
  ORDER BY t.total DESC, c.name LIMIT 50);

INSERT INTO r(v) SELECT group_concat(x, ';') FROM (
  SELECT region || ',' || name || ',' || rank AS x
  FROM (SELECT c.region, c.name, rank() OVER (PARTITION BY c.region ORDER BY sum(o.amount) DESC, c.name) AS rank
        FROM customer c JOIN orders o ON o.customer = c.id GROUP BY c.id)
  WHERE rank <= 3 ORDER BY region, rank);

INSERT INTO r(v) SELECT 'no orders ' || count(*) FROM customer c
  WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer = c.id);

INSERT INTO r(v) SELECT group_concat(id, ',') FROM
  (SELECT id FROM orders ORDER BY memo DESC, item, amount, id LIMIT 100);

INSERT INTO r(v) SELECT group_concat(x, ';') FROM (
  SELECT (day / 365) || ',' || count(DISTINCT customer) || ',' || sum(amount) AS x
  FROM orders GROUP BY day / 365 ORDER BY 1);

INSERT INTO r(v) SELECT 'string agg ' || length(group_concat(name || coalesce(note, '-'), '|')) FROM customer;

UPDATE orders SET amount = amount * 2, item = item || '-x' WHERE day % 10 = 3;
DELETE FROM orders WHERE amount % 5 = 1;
DELETE FROM customer WHERE id % 17 = 0;
UPDATE customer SET note = printf('%.*c', 300 + id % 200, 'n') WHERE id % 13 = 0;

INSERT INTO r(v) SELECT 'after changes ' || count(*) || ' ' || sum(amount) || ' ' || count(DISTINCT item) FROM orders;
INSERT INTO r(v) SELECT 'orphans ' || count(*) FROM orders o LEFT JOIN customer c ON c.id = o.customer WHERE c.id IS NULL;
INSERT INTO r(v) SELECT 'joined ' || count(*) || ' ' || sum(amount) || ' ' || sum(length(note))
  FROM orders JOIN customer ON customer.id = orders.customer;
INSERT INTO r(v) SELECT 'integrity ' || integrity_check FROM pragma_integrity_check;

SELECT 'ok ' || lower(substr(hex(sha3(group_concat(v, char(10)), 256)), 1, 16)) || ' rows=' || count(*)
FROM (SELECT v FROM r ORDER BY id);
