# Writes an SQL script for the sqlite3 benchmark: inserts, an index, joins and aggregates.
# Usage: python3 gen_sql.py ROWS > script.sql
import sys

rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
print("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
print("CREATE TABLE item(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, price REAL, note TEXT);")
print("CREATE TABLE tag(item INTEGER, label TEXT);")
print(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})")
print("INSERT INTO item SELECT i, printf('name-%08d', (i * 7919) % 1000003), i % 97,")
print("  (i % 1000) / 10.0, substr('abcdefghijklmnopqrstuvwxyz', 1 + i % 26) FROM n;")
print(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})")
print("INSERT INTO tag SELECT i, printf('t%d', i % 311) FROM n;")
print("CREATE INDEX item_name ON item(name); CREATE INDEX tag_item ON tag(item);")
print("SELECT grp, count(*), round(sum(price), 2), max(name) FROM item GROUP BY grp ORDER BY grp LIMIT 5;")
print("SELECT t.label, count(*) FROM item i JOIN tag t ON t.item = i.id")
print("  WHERE i.name LIKE 'name-00%' GROUP BY t.label ORDER BY 2 DESC, 1 LIMIT 5;")
print("SELECT count(DISTINCT note), group_concat(DISTINCT substr(name, 6, 2)) FROM item;")
print("UPDATE item SET note = note || note WHERE grp < 20;")
print("DELETE FROM item WHERE grp % 3 = 0; VACUUM;")
print("SELECT count(*), sum(length(note)) FROM item;")
