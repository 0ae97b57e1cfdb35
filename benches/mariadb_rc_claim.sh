#!/usr/bin/env bash
# Why MariaDB's claim costs more at READ COMMITTED during a drain (issue 16; benches/README.md).
#
# Builds a 40k-row table with tend's due index (queue, priority, execute_time), holds purge back
# with an open REPEATABLE READ snapshot (as a drain's history outruns purge), "leases" 20k rows
# (moving their due-index entries: the old ones stay delete-marked) and deletes 10k, then times
# 300 claims of 100 rows each way:
#   claim_rc / claim_rr  the claim's locking read, SELECT ... FOR UPDATE SKIP LOCKED over the
#                        due index, at READ COMMITTED / REPEATABLE READ
#   cand_rc              the same read without a lock (a consistent read), at READ COMMITTED
#   pk_rc                a locking read of 200 candidate ids by primary key, at READ COMMITTED
# and the two claims again once purge has caught up.
#
# Usage: benches/mariadb_rc_claim.sh [mysql client args]   (default: -uroot -h127.0.0.1)
# Creates and drops its own database tend_rcexp_<pid>. Needs the `mysql` client and python3.
set -euo pipefail
args=("$@"); [ ${#args[@]} -eq 0 ] && args=(-uroot -h127.0.0.1)
db="tend_rcexp_$$"
dir=$(mktemp -d)
my() { mysql "${args[@]}" "$@"; }
blocker=""
cleanup() {
    [ -n "$blocker" ] && kill "$blocker" 2>/dev/null || true
    my -Ne "SELECT id FROM information_schema.processlist WHERE db = '$db'" 2>/dev/null |
        while read -r id; do my -e "KILL $id" 2>/dev/null || true; done
    my -e "DROP DATABASE IF EXISTS $db" || true
    rm -rf "$dir"
}
trap cleanup EXIT
my -e "CREATE DATABASE $db"
my "$db" <<'SQL'
CREATE TABLE t (id BIGINT AUTO_INCREMENT PRIMARY KEY, queue VARCHAR(64) NOT NULL DEFAULT 'default',
  priority INT NOT NULL DEFAULT 0, execute_time BIGINT NOT NULL, task_status INT NOT NULL DEFAULT 0,
  payload VARBINARY(64) NOT NULL DEFAULT 'xxxxxxxxxxxxxxxx', KEY due (queue, priority, execute_time))
  ENGINE=InnoDB;
CREATE TABLE digits (d INT);
INSERT INTO digits VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9);
INSERT INTO t (execute_time) SELECT 1 + a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d
  FROM digits a, digits b, digits c, digits e, digits f
  WHERE a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d < 40000;
SQL
python3 - "$dir" <<'PY'
import sys
d = sys.argv[1]
due = "FROM t WHERE queue = 'default' AND priority = 0 AND execute_time <= 50000 AND task_status IN (0, 1, 2)"
ids = ",".join(str(i) for i in range(20001, 20201))
kinds = {
    "claim_rc": ("READ COMMITTED", f"SELECT id, payload {due} ORDER BY execute_time LIMIT 100 FOR UPDATE SKIP LOCKED;"),
    "claim_rr": ("REPEATABLE READ", f"SELECT id, payload {due} ORDER BY execute_time LIMIT 100 FOR UPDATE SKIP LOCKED;"),
    "cand_rc": ("READ COMMITTED", f"SELECT id {due} ORDER BY execute_time LIMIT 100;"),
    "pk_rc": ("READ COMMITTED", f"SELECT id, payload FROM t WHERE id IN ({ids}) AND task_status IN (0, 1, 2) AND execute_time <= 50000 ORDER BY execute_time LIMIT 100 FOR UPDATE SKIP LOCKED;"),
}
for name, (level, q) in kinds.items():
    with open(f"{d}/{name}.sql", "w") as f:
        f.write(f"SET SESSION TRANSACTION ISOLATION LEVEL {level};\n")
        for _ in range(300):
            f.write(f"BEGIN; {q} ROLLBACK;\n")
PY
run() {
    local s e
    s=$(date +%s%N)
    my "$db" < "$dir/$2.sql" > /dev/null
    e=$(date +%s%N)
    printf '%-16s %-9s %8.2f ms a statement\n' "$1" "$2" "$(echo "($e - $s) / 300 / 1000000" | bc -l)"
}
for k in claim_rc claim_rr; do run fresh "$k"; done
echo "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ; START TRANSACTION WITH CONSISTENT SNAPSHOT; SELECT COUNT(*) FROM t; SELECT SLEEP(600);" |
    my "$db" > /dev/null 2>&1 &
blocker=$!
sleep 1
my "$db" -e "UPDATE t SET task_status = 1, execute_time = 1000000000 + id WHERE id <= 20000; DELETE FROM t WHERE id <= 10000;"
for k in claim_rc claim_rr cand_rc pk_rc claim_rc claim_rr; do run "unpurged" "$k"; done
kill "$blocker" 2>/dev/null || true
my -Ne "SELECT id FROM information_schema.processlist WHERE db = '$db' AND info LIKE 'SELECT SLEEP%'" |
    while read -r id; do my -e "KILL $id"; done
blocker=""
for _ in $(seq 1 30); do
    h=$(my -e "SHOW ENGINE INNODB STATUS\G" | sed -n 's/.*History list length \([0-9]*\).*/\1/p')
    [ "${h:-1}" -le 5 ] && break
    sleep 1
done
for k in claim_rc claim_rr; do run purged "$k"; done
