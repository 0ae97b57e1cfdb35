#!/usr/bin/env bash
# Seeds a migrated, empty consistency_task with N rows (default 1,000,000) shaped like a busy
# queue that keeps completed rows, for measuring the dashboard's pages (README, "Web
# dashboard"): 70% succeeded, 20% pending (a fifth of them due), 5% failed, 4% dead, 1% held;
# 10 signatures, 16 shard keys, gmt_modified spread over the last 30 days.
#
#   benches/web_seed.sh sqlite /tmp/tend-1m.db [N]
#   benches/web_seed.sh postgres postgres://postgres@127.0.0.1:5432/tend_1m [N]
#   benches/web_seed.sh mysql mysql://root@127.0.0.1:3306/tend_1m [N]
set -euo pipefail
backend=$1 url=$2 n=${3:-1000000}
select="
  'bench.sig' || (g % 10), s, CASE WHEN s IN (2, 4) THEN 3 ELSE 0 END, 25,
  CASE WHEN s IN (3, 4, 5) THEN 9223372036854775807
       WHEN s = 0 AND g % 5 = 0 THEN now_ms - (g % 3600) * 1000
       ELSE now_ms + 3600000 END,
  'bench.sig' || (g % 10), X'00',
  CASE WHEN s IN (2, 4) THEN 'timeout talking to service ' || (g % 97) ELSE '' END,
  g % 16, now_ms - (g * 2591) % 2592000000, now_ms - (g * 2591) % 2592000000"
status="CASE WHEN g % 100 < 70 THEN 3 WHEN g % 100 < 90 THEN 0 WHEN g % 100 < 95 THEN 2
             WHEN g % 100 < 99 THEN 4 ELSE 5 END"
cols="task_id, task_status, execute_times, max_attempts, execute_time, method_sign_name,
  task_parameter, error_msg, shard_key, gmt_create, gmt_modified"
case $backend in
sqlite)
    python3 - "$url" "$n" <<PY
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1])
c.execute("""WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < ?)
  INSERT INTO consistency_task ($cols)
  SELECT $select FROM (SELECT g, $status AS s, CAST(strftime('%s', 'now') AS INTEGER) * 1000 AS now_ms FROM c)""",
  (int(sys.argv[2]),))
c.commit()
c.execute("ANALYZE")
PY
    ;;
postgres)
    psql -q "$url" <<SQL
INSERT INTO consistency_task ($cols)
SELECT $(echo "$select" | sed "s/X'00'/'\\\\x00'::bytea/")
FROM (SELECT g, $status AS s, (extract(epoch FROM now()) * 1000)::bigint AS now_ms
      FROM generate_series(1::bigint, $n) g) x;
ANALYZE consistency_task;
SQL
    ;;
mysql)
    # MySQL's || is OR: CONCAT instead; rows from a cross join of digits.
    db=${url##*/}
    mysql -h127.0.0.1 -uroot "$db" <<SQL
SET @now_ms = UNIX_TIMESTAMP() * 1000;
INSERT INTO consistency_task ($cols)
SELECT $(echo "$select" | sed -E "s/'bench.sig' \|\| \(g % 10\)/CONCAT('bench.sig', g % 10)/g; s/'timeout talking to service ' \|\| \(g % 97\)/CONCAT('timeout talking to service ', g % 97)/; s/now_ms/@now_ms/g")
FROM (SELECT g, $status AS s FROM (
  SELECT a.d + 10 * b.d + 100 * c.d + 1000 * d.d + 10000 * e.d + 100000 * f.d + 1 AS g
  FROM (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) a,
       (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) b,
       (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) c,
       (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) d,
       (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) e,
       (SELECT 0 d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 UNION ALL SELECT 8 UNION ALL SELECT 9) f
  ) nums WHERE g <= $n) x;
ANALYZE TABLE consistency_task;
SQL
    ;;
*) echo "usage: $0 sqlite|postgres|mysql URL [N]" >&2; exit 2 ;;
esac
echo "seeded $n rows into $url"
