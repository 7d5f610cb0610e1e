#!/usr/bin/env bash
# pgbench -S direct vs. PgBouncer (session mode) vs. Countersign, side by side in one run.
#
# Usage: tests/bench/pgbench-select.sh [seconds-per-run] [rounds]
# Builds the release binary, creates a scratch database (scale 10), starts
# PgBouncer (installed from Debian's packages when missing) and
# `countersign dev` in front of it with audit on, and alternates the three
# targets so that machine noise hits all of them alike. Prints a table and
# rewrites the "pgbench -S" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
SECS=${1:-15}
ROUNDS=${2:-3}
CLIENTS=8
DB="cs_bench_$$"
BIN=${CARGO_TARGET_DIR:-target}/release/countersign

if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
fi
PGBOUNCER=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
cargo build --release --locked --bin countersign >/dev/null
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
DATA=$(mktemp -d)
cleanup() {
  [ -n "${DEV_PID:-}" ] && kill "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null || true
  [ -f "$DATA/pgbouncer.pid" ] && kill "$(cat "$DATA/pgbouncer.pid")" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q "$DB" >/dev/null 2>&1

"$BIN" dev --data-dir "$DATA" --upstream "bench=postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" \
  --pg-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --admin-token "bench-admin-token-0123456789" \
  >"$DATA/out" 2>"$DATA/err" &
DEV_PID=$!
for _ in $(seq 1 100); do grep -q '^ready' "$DATA/out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$DATA/out" || { cat "$DATA/err"; exit 1; }
PG=$(sed -n 's/^pg=//p' "$DATA/out"); GW_PORT=${PG##*:}

# PgBouncer in session mode, trust auth to the same database; it refuses to run as root.
BOUNCER_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chmod 755 "$DATA"
printf '"postgres" ""\n' >"$DATA/userlist.txt"
cat >"$DATA/pgbouncer.ini" <<INI
[databases]
$DB = host=127.0.0.1 port=5432 dbname=$DB user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $DATA/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 40
pidfile = $DATA/pgbouncer.pid
logfile = $DATA/pgbouncer.log
INI
chown -R postgres "$DATA" 2>/dev/null || true
if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$PGBOUNCER" -d "$DATA/pgbouncer.ini"; else "$PGBOUNCER" -d "$DATA/pgbouncer.ini"; fi
for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p "$BOUNCER_PORT" -q && break; sleep 0.1; done
TOKEN=$(sed -n 's/^user_token=//p' "$DATA/out"); USER_ID=$(sed -n 's/^user=//p' "$DATA/out")

declare -A results
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    d=$(pgbench -h 127.0.0.1 -U postgres -S -M "$mode" -c $CLIENTS -j 2 -T "$SECS" -n "$DB" 2>/dev/null | tps)
    b=$(pgbench -h 127.0.0.1 -p "$BOUNCER_PORT" -U postgres -S -M "$mode" -c $CLIENTS -j 2 -T "$SECS" -n "$DB" 2>/dev/null | tps)
    g=$(PGPASSWORD="$TOKEN" PGSSLMODE=disable pgbench -h 127.0.0.1 -p "$GW_PORT" -U "$USER_ID" -S -M "$mode" -c $CLIENTS -j 2 -T "$SECS" -n bench 2>/dev/null | tps)
    results[$mode,direct]+="$d "
    results[$mode,pgbouncer]+="$b "
    results[$mode,gateway]+="$g "
    echo "round $round $mode: direct $d tps, pgbouncer $b tps, gateway $g tps"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {printf "%.0f", a[int((NR+1)/2)]}'; }
table="| mode | direct TPS | PgBouncer TPS | Countersign TPS | PgBouncer / direct | Countersign / direct | Countersign / PgBouncer |
|---|---|---|---|---|---|---|"
for mode in simple prepared; do
  d=$(echo "${results[$mode,direct]}" | median)
  b=$(echo "${results[$mode,pgbouncer]}" | median)
  g=$(echo "${results[$mode,gateway]}" | median)
  r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
  table+="
| $mode | $d | $b | $g | $(r "$b" "$d")× | $(r "$g" "$d")× | $(r "$g" "$b")× |"
done
echo "$table"

section="## pgbench -S, 8 clients: direct vs. PgBouncer vs. gateway

Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; PostgreSQL $(psql -h 127.0.0.1 -U postgres -Atc 'show server_version'), scale 10.
PgBouncer: session mode, trust auth. Gateway: \`countersign dev\` (release build) with audit on, no policy,
plain TCP between client and gateway (its control plane and SQLite audit store share the 2 cores).
Command: \`tests/bench/pgbench-select.sh $SECS $ROUNDS\` (each cell: median of $ROUNDS alternating runs of
\`pgbench -S -M MODE -c $CLIENTS -j 2 -T $SECS\`).

$table

Raw TPS per round (direct | PgBouncer | gateway): simple ${results[simple,direct]}| ${results[simple,pgbouncer]}| ${results[simple,gateway]}; prepared ${results[prepared,direct]}| ${results[prepared,pgbouncer]}| ${results[prepared,gateway]}
"
write_section "pgbench -S, 8 clients: direct vs. PgBouncer vs. gateway" "$section"
