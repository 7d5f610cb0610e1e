#!/usr/bin/env bash
# The audit spool's cost: pgbench -S through the gateway with the spool's default group
# commit (fsync every 10 ms, statements never wait for it) vs. a strict_audit resource
# (each statement waits for the fsync that covers its audit record before it is forwarded),
# with direct connections as the reference.
#
# Usage: tests/bench/spool.sh [seconds-per-run] [rounds]
# Builds the release binary, creates a scratch database (scale 10), starts two
# `countersign dev` instances (one with --strict-audit), alternates the three targets so
# that machine noise hits all of them alike, prints a table and rewrites the
# "Audit spool" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
SECS=${1:-15}
ROUNDS=${2:-3}
CLIENTS=8
DB="cs_bench_spool_$$"
BIN=${CARGO_TARGET_DIR:-target}/release/countersign

cargo build --release --locked --bin countersign >/dev/null
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
DATA=$(mktemp -d)
cleanup() {
  for pid in ${PIDS:-}; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; done
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
pgbench -h 127.0.0.1 -U postgres -i -s 10 -q "$DB" >/dev/null 2>&1

# start_dev NAME [FLAGS...]: a `countersign dev` with its own data dir; sets PORT_NAME and TOKEN_NAME.
start_dev() {
  local name=$1; shift
  mkdir -p "$DATA/$name"
  "$BIN" dev --data-dir "$DATA/$name" --upstream "bench=postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable" \
    --pg-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --admin-token "bench-admin-token-0123456789" \
    "$@" >"$DATA/$name/out" 2>"$DATA/$name/err" &
  PIDS="${PIDS:-} $!"
  for _ in $(seq 1 100); do grep -q '^ready' "$DATA/$name/out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$DATA/$name/out" || { cat "$DATA/$name/err"; exit 1; }
  local pg; pg=$(sed -n 's/^pg=//p' "$DATA/$name/out")
  printf -v "PORT_$name" '%s' "${pg##*:}"
  printf -v "TOKEN_$name" '%s' "$(sed -n 's/^user_token=//p' "$DATA/$name/out")"
  USER_ID=$(sed -n 's/^user=//p' "$DATA/$name/out")
}
start_dev batched
start_dev strict --strict-audit

lat() { sed -n 's/^latency average = \([0-9.]*\).*/\1/p' | head -n1; }
gw() { # gw NAME MODE
  local port="PORT_$1" token="TOKEN_$1"
  PGPASSWORD="${!token}" PGSSLMODE=disable pgbench -h 127.0.0.1 -p "${!port}" -U "$USER_ID" -S -M "$2" -c $CLIENTS -j 2 -T "$SECS" -n bench 2>/dev/null
}
declare -A results latency
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    d=$(pgbench -h 127.0.0.1 -U postgres -S -M "$mode" -c $CLIENTS -j 2 -T "$SECS" -n "$DB" 2>/dev/null)
    b=$(gw batched "$mode")
    s=$(gw strict "$mode")
    declare -A outs=([direct]="$d" [batched]="$b" [strict]="$s")
    for name in direct batched strict; do
      results[$mode,$name]+="$(echo "${outs[$name]}" | tps) "
      latency[$mode,$name]+="$(echo "${outs[$name]}" | lat) "
    done
    echo "round $round $mode: direct $(echo "$d" | tps) tps, spool (fsync every 10 ms) $(echo "$b" | tps) tps, strict $(echo "$s" | tps) tps"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {printf "%.2f", a[int((NR+1)/2)]}'; }
r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
table="| mode | direct TPS | spool TPS (fsync every 10 ms) | strict TPS (fsync before forward) | spool / direct | strict / direct | strict / spool | latency ms: direct, spool, strict |
|---|---|---|---|---|---|---|---|"
for mode in simple prepared; do
  d=$(echo "${results[$mode,direct]}" | median); b=$(echo "${results[$mode,batched]}" | median); s=$(echo "${results[$mode,strict]}" | median)
  ld=$(echo "${latency[$mode,direct]}" | median); lb=$(echo "${latency[$mode,batched]}" | median); ls=$(echo "${latency[$mode,strict]}" | median)
  table+="
| $mode | ${d%.*} | ${b%.*} | ${s%.*} | $(r "$b" "$d")× | $(r "$s" "$d")× | $(r "$s" "$b")× | $ld, $lb, $ls |"
done
echo "$table"

FS=$(df -T "$DATA" | awk 'NR==2 {print $2}')
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
section="## Audit spool: group commit vs. strict_audit (pgbench -S, 8 clients)

Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(free -g | awk '/Mem/ {print $2}') GiB; PostgreSQL $(psql -h 127.0.0.1 -U postgres -Atc 'show server_version'), scale 10;
spool on $FS. Two \`countersign dev\` instances (release build, audit on, no policy, plain TCP): one with
the default spool (each statement's intent is written with one \`write(2)\` before it is forwarded,
fsync every 10 ms in the background), one with \`--strict-audit\` (each statement also waits for the
fsync that covers its intent; concurrent sessions share fsyncs). Command: \`tests/bench/spool.sh $SECS $ROUNDS\`
(each cell: median of $ROUNDS alternating runs of \`pgbench -S -M MODE -c $CLIENTS -j 2 -T $SECS\`).
Load average when it finished: $LOAD (the machine is shared; compare ratios within one run).
The spool column compares with the Countersign column of the first section (the same setup
with an in-memory audit queue, before the spool); strict pays one fsync round trip per statement.

$table

Raw TPS per round (direct | spool | strict): simple ${results[simple,direct]}| ${results[simple,batched]}| ${results[simple,strict]}; prepared ${results[prepared,direct]}| ${results[prepared,batched]}| ${results[prepared,strict]}
"
write_section "Audit spool: group commit vs. strict_audit (pgbench -S, 8 clients)" "$section"
