#!/usr/bin/env bash
# sqlite3 under the preload: 200k rows inserted in one transaction through a
# recursive CTE, another table of 50k rows, indexes, joins, GROUP BY,
# window functions, a big sort, updates and deletes, VACUUM, integrity
# check and a full .dump. Every query result and the dump must equal the
# output of the same script run without preload.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh" "$@"
pz_require_cmd sqlite3

cat >workload.sql <<'EOF'
PRAGMA cache_size = -65536;     -- 64 MiB page cache: many allocations
PRAGMA temp_store = MEMORY;
PRAGMA journal_mode = DELETE;

CREATE TABLE customer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, region INTEGER, note TEXT);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER NOT NULL, amount INTEGER,
                     item TEXT, day INTEGER, blob BLOB);

BEGIN;
WITH RECURSIVE c(i, x) AS (
  SELECT 1, 12345
  UNION ALL
  SELECT i + 1, (x * 1103515245 + 12345) % 2147483648 FROM c WHERE i < 50000)
INSERT INTO customer
SELECT i, 'cust-' || printf('%06d', i) || '-' || substr('abcdefghijklmnopqrstuvwxyz', 1 + x % 20, 1 + x % 7),
       x % 37, CASE WHEN i % 11 = 0 THEN NULL ELSE hex(x) || ' note ' || (x % 1000) END
FROM c;

WITH RECURSIVE o(i, x) AS (
  SELECT 1, 987654321
  UNION ALL
  SELECT i + 1, (x * 1103515245 + 12345) % 2147483648 FROM o WHERE i < 200000)
INSERT INTO orders
SELECT i, 1 + x % 50000, x % 100000, 'item-' || (x % 913), (x / 7) % 3650,
       CASE WHEN i % 97 = 0 THEN zeroblob(500 + x % 8000) ELSE x'' END
FROM o;
COMMIT;

CREATE INDEX orders_customer ON orders(customer);
CREATE INDEX orders_item_day ON orders(item, day);
CREATE INDEX customer_region ON customer(region, name);

SELECT 'counts', (SELECT count(*) FROM customer), (SELECT count(*) FROM orders),
       (SELECT sum(amount) FROM orders), (SELECT sum(length(blob)) FROM orders);

SELECT 'by region', c.region, count(*), sum(o.amount), min(o.amount), max(o.amount)
FROM orders o JOIN customer c ON c.id = o.customer
GROUP BY c.region ORDER BY c.region;

SELECT 'top items', item, count(*) AS n, avg(amount)
FROM orders GROUP BY item ORDER BY n DESC, item LIMIT 15;

SELECT 'best customers', c.name, t.total
FROM (SELECT customer, sum(amount) AS total FROM orders GROUP BY customer) t
JOIN customer c ON c.id = t.customer
ORDER BY t.total DESC, c.name LIMIT 20;

SELECT 'window', region, name, rank
FROM (SELECT c.region, c.name, rank() OVER (PARTITION BY c.region ORDER BY sum(o.amount) DESC, c.name) AS rank
      FROM customer c JOIN orders o ON o.customer = c.id GROUP BY c.id)
WHERE rank <= 2 ORDER BY region, rank;

SELECT 'no orders', count(*) FROM customer c WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer = c.id);

SELECT 'sorted', group_concat(id, ',') FROM
  (SELECT id FROM orders ORDER BY item DESC, amount, id LIMIT 40);

SELECT 'string agg', length(group_concat(name || coalesce(note, '-'), '|')) FROM customer;

UPDATE orders SET amount = amount * 2, item = item || '-x' WHERE day % 10 = 3;
DELETE FROM orders WHERE amount % 5 = 1;
DELETE FROM customer WHERE id % 17 = 0;
UPDATE customer SET note = printf('%.*c', 300 + id % 200, 'n') WHERE id % 13 = 0;

SELECT 'after changes', count(*), sum(amount), count(DISTINCT item) FROM orders;
SELECT 'orphans', count(*) FROM orders o LEFT JOIN customer c ON c.id = o.customer WHERE c.id IS NULL;

VACUUM;
PRAGMA integrity_check;
SELECT 'after vacuum', count(*), sum(amount), sum(length(note)) FROM orders JOIN customer ON customer.id = orders.customer;
EOF

for mode in ref pz; do
  pz_exec "$mode" sql sqlite3 -batch -bail "$mode.db" <workload.sql >"query.$mode.out"
  pz_exec "$mode" dump sqlite3 -batch "$mode.db" .dump >"dump.$mode.sql"
done
grep -qx ok query.pz.out || pz_fail "PRAGMA integrity_check did not say ok: $(grep -v '|' query.pz.out | head)"
pz_compare_files "sqlite3 query results" query.ref.out query.pz.out
pz_compare_str "row counts and sums (known values)" "counts|50000|200000|10024927296|9385855" \
  "$(grep '^counts|' query.pz.out)"
pz_compare_files "sqlite3 .dump of the database" dump.ref.sql dump.pz.sql
# The database file written with the preload must be sound without it.
chk="$(env -u LD_PRELOAD sqlite3 pz.db 'PRAGMA integrity_check;' 2>&1)"
pz_compare_str "integrity_check (without preload) of the database written with it" ok "$chk"

pz_pass "$(grep '^counts' query.pz.out)"
