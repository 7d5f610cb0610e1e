#!/usr/bin/env bash
# pgbench -S through Countersign vs. a direct connection, side by side in one run.
#
# Usage: tests/bench/pgbench-select.sh [seconds-per-run] [rounds]
# Builds the release binary, creates a scratch database (scale 10), starts
# `countersign dev` in front of it with audit on, and alternates direct and
# gateway runs so that machine noise hits both alike. Prints a table and
# rewrites the "pgbench -S" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
SECS=${1:-15}
ROUNDS=${2:-3}
CLIENTS=8
DB="cs_bench_$$"
BIN=${CARGO_TARGET_DIR:-target}/release/countersign

cargo build --release --locked --bin countersign >/dev/null
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
DATA=$(mktemp -d)
cleanup() {
  [ -n "${DEV_PID:-}" ] && kill "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null || true
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
TOKEN=$(sed -n 's/^user_token=//p' "$DATA/out"); USER_ID=$(sed -n 's/^user=//p' "$DATA/out")

tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n1; }
declare -A results
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    d=$(pgbench -h 127.0.0.1 -U postgres -S -M "$mode" -c $CLIENTS -j 2 -T "$SECS" -n "$DB" 2>/dev/null | tps)
    g=$(PGPASSWORD="$TOKEN" PGSSLMODE=disable pgbench -h 127.0.0.1 -p "$GW_PORT" -U "$USER_ID" -S -M "$mode" -c $CLIENTS -j 2 -T "$SECS" -n bench 2>/dev/null | tps)
    results[$mode,direct]+="$d "
    results[$mode,gateway]+="$g "
    echo "round $round $mode: direct $d tps, gateway $g tps"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
table="| mode | direct TPS (median) | gateway TPS (median) | gateway / direct |
|---|---|---|---|"
for mode in simple prepared; do
  d=$(echo "${results[$mode,direct]}" | median); g=$(echo "${results[$mode,gateway]}" | median)
  ratio=$(awk -v g="$g" -v d="$d" 'BEGIN { printf "%.2f", g / d }')
  table+="
| $mode | $d | $g | ${ratio}× |"
done
echo "$table"

section="## pgbench -S, 8 clients: direct vs. gateway

Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; PostgreSQL $(psql -h 127.0.0.1 -U postgres -Atc 'show server_version'), scale 10.
Gateway: \`countersign dev\` (release build) with audit on, plain TCP between client and gateway.
Command: \`tests/bench/pgbench-select.sh $SECS $ROUNDS\` (each cell: median of $ROUNDS alternating runs of
\`pgbench -S -M MODE -c $CLIENTS -j 2 -T $SECS\`).

$table

Raw TPS per round (direct | gateway): simple ${results[simple,direct]}| ${results[simple,gateway]}; prepared ${results[prepared,direct]}| ${results[prepared,gateway]}
"
write_section "pgbench -S, 8 clients: direct vs. gateway" "$section"
