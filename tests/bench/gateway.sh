#!/usr/bin/env bash
# The gateway's cost, side by side in one run: direct PostgreSQL vs. PgBouncer (session
# mode) vs. Countersign (audit on, a guardrail policy, mask rules that match nothing) vs.
# Countersign with masking active (the selected column is masked in every row).
#
# Usage: tests/bench/gateway.sh [seconds-per-run] [rounds]
#
# Countersign runs in two shapes, both measured: `countersign dev` (control plane, SQLite
# audit store and gateway in one process) and the production shape (`countersign
# control-plane` with its PostgreSQL store, and `countersign gateway`, as two processes,
# with the same policy). On this one machine the production shape's control plane and store
# still share the two cores with everything else.
#
# Workloads (targets alternate inside each round, so machine noise hits all alike; each
# cell is the median of the rounds; after each pgbench run the script waits for the machine to
# be quiet, so that Countersign's audit upload catching up is not charged to the next target,
# and records that wait as `settle`):
#   1. pgbench -S in -M simple, extended and prepared, at 1, 8 and 32 clients;
#   2. pgbench TPC-B (the default script), 8 clients;
#   3. a 1,000,000-row transfer (SELECT * FROM pgbench_accounts at scale 10) through psql;
#   4. new connections: pgbench -S -C (a new connection per transaction) over TLS, with
#      SCRAM to the upstream and, for Countersign, the access token checked;
#   5. 1,000 idle client connections: the resident memory of each proxy process.
#
# Everything runs against a private PostgreSQL cluster started by this script
# (max_connections 1100, SSL on, the `bench` role authenticating with SCRAM), so the
# machine's shared server is left alone. Builds the release binary, installs PgBouncer
# from Debian's packages when missing, prints the tables and rewrites the "Gateway vs.
# direct vs. PgBouncer" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
SECS=${1:-10}
ROUNDS=${2:-3}
BIN=${CARGO_TARGET_DIR:-target}/release/countersign
cargo build --release --locked --bin countersign >/dev/null
. tests/bench/proxies.sh

# --- Countersign `dev`: `plain` (guardrails, mask rules matching nothing) and `masked` ---------
"$BIN" dev --data-dir "$DATA/dev" --upstream "plain=$UPSTREAM" --upstream "masked=$UPSTREAM" \
  --policy "$DATA/policy.toml" --pg-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 \
  --admin-token "bench-admin-token-0123456789" >"$DATA/out" 2>"$DATA/err" &
DEV_PID=$!
PIDS+=("$DEV_PID")
for _ in $(seq 1 100); do grep -q '^ready' "$DATA/out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$DATA/out" || { cat "$DATA/err"; exit 1; }
PG=$(sed -n 's/^pg=//p' "$DATA/out"); GW_PORT=${PG##*:}
TOKEN=$(sed -n 's/^user_token=//p' "$DATA/out"); USER_ID=$(sed -n 's/^user=//p' "$DATA/out")

# --- Countersign, production shape: control plane (PostgreSQL store) + gateway ----------
start_production production "$BIN"

# run TARGET CMD [ARGS...]: CMD with the target's connection in PG* variables.
run() {
  local target=$1; shift
  case $target in
    countersign) PGHOST=127.0.0.1 PGPORT=$GW_PORT PGUSER=$USER_ID PGPASSWORD=$TOKEN PGDATABASE=plain "$@" ;;
    masked) PGHOST=127.0.0.1 PGPORT=$GW_PORT PGUSER=$USER_ID PGPASSWORD=$TOKEN PGDATABASE=masked "$@" ;;
    *) bench_env "$target" "$@" ;;
  esac
}
TARGETS=(direct pgbouncer countersign masked production)

# The masking really is on (and off) before anything is timed.
m=$(run masked env PGSSLMODE=disable psql -Atc "SELECT abalance FROM pgbench_accounts WHERE aid = 1")
p=$(run countersign env PGSSLMODE=disable psql -Atc "SELECT abalance FROM pgbench_accounts WHERE aid = 1")
[ "$p" = "0" ] || { echo "plain is masked: $p"; exit 1; }
[ "$m" != "0" ] && [ -n "$m" ] || { echo "masking is not on: $m"; exit 1; }
p=$(run production env PGSSLMODE=disable psql -Atc "SELECT abalance FROM pgbench_accounts WHERE aid = 1")
[ "$p" = "0" ] || { echo "the production-shape gateway does not answer: $p"; tail -20 "$DATA/gw-production.log"; exit 1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "-" }'; }
declare -A R

# 1 and 2: pgbench.
for round in $(seq 1 "$ROUNDS"); do
  for clients in 1 8 32; do
    for mode in simple extended prepared; do
      for t in "${TARGETS[@]}"; do
        v=$(run "$t" env PGSSLMODE=disable pgbench -S -M "$mode" -c "$clients" -j "$(( clients < 2 ? 1 : 2 ))" -T "$SECS" -n 2>/dev/null | tps)
        R[settle,$clients,$mode,$t]+="$(settle) "
        R[select,$clients,$mode,$t]+="$v "
      done
      echo "round $round: -S $mode $clients clients: $(for t in "${TARGETS[@]}"; do printf '%s %s  ' "$t" "$(echo "${R[select,$clients,$mode,$t]}" | awk '{print $NF}')"; done)"
    done
  done
  for t in direct pgbouncer countersign production; do
    v=$(run "$t" env PGSSLMODE=disable pgbench -c 8 -j 2 -T "$SECS" -n 2>/dev/null | tps)
    R[settle,tpcb,$t]+="$(settle) "
    R[tpcb,$t]+="$v "
  done
  echo "round $round: TPC-B 8 clients: ${R[tpcb,direct]}| ${R[tpcb,pgbouncer]}| ${R[tpcb,countersign]}| ${R[tpcb,production]}"
done

# 3: 1M-row transfer, wall seconds: a short run, so three per round (targets alternating) and
# the median of them all.
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null || return 1; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'; }
for round in $(seq 1 $((3 * ROUNDS))); do
  for t in "${TARGETS[@]}"; do
    R[transfer,$t]+="$(run "$t" secs env PGSSLMODE=disable psql -At -c "SELECT aid, bid, abalance, filler FROM pgbench_accounts") "
  done
  echo "round $round: 1M rows: direct ${R[transfer,direct]}| countersign ${R[transfer,countersign]}| masked ${R[transfer,masked]}"
done

# 4: a new TLS connection per transaction (pgbench reports the mean connection time).
conn_ms() { sed -n 's/^average connection time = \([0-9.]*\) ms.*/\1/p' | head -n1; }
for round in $(seq 1 "$ROUNDS"); do
  for t in direct pgbouncer countersign; do
    v=$(run "$t" env PGSSLMODE=require pgbench -S -C -c 1 -j 1 -T "$SECS" -n 2>/dev/null | conn_ms)
    R[connect,$t]+="$v "
  done
  echo "round $round: connection ms: ${R[connect,direct]}| ${R[connect,pgbouncer]}| ${R[connect,countersign]}"
done
# The p50 the target names: wall time of psql -c 'SELECT 1' over TLS, one new connection
# each, the targets alternating connection by connection. psql's own start-up is in every
# sample alike, so the difference of two p50s is what the proxy adds.
wall_us() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo $(( (t1 - t0) / 1000 )); }
p50_ms() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {if (NR) printf "%.2f", a[int((NR+1)/2)] / 1000}'; }
declare -A CONN_US
for _ in $(seq 1 $(( 40 * ROUNDS ))); do
  for t in direct pgbouncer countersign; do
    CONN_US[$t]+="$(run "$t" wall_us env PGSSLMODE=require psql -Atc 'SELECT 1') "
  done
done
for t in direct pgbouncer countersign; do R[connect_p50,$t]=$(echo "${CONN_US[$t]}" | p50_ms); done
echo "connection p50 ms (psql, TLS): direct ${R[connect_p50,direct]} | pgbouncer ${R[connect_p50,pgbouncer]} | countersign ${R[connect_p50,countersign]}"

# 5: 1,000 idle client connections (each holds an upstream one: session mode).
printf '\\sleep 20 s\n' >"$DATA/idle.sql"
rss_mb() { awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
pid_of() { case $1 in countersign) echo "$DEV_PID" ;; production) echo "${GWPID[production]}" ;; *) cat "$DATA/pgbouncer.pid" ;; esac; }
declare -A IDLE_BASE
for t in countersign production pgbouncer; do IDLE_BASE[$t]=$(rss_mb "$(pid_of "$t")"); done
for t in countersign production pgbouncer; do
  run "$t" env PGSSLMODE=disable pgbench -c 1000 -j 2 -t 1 -f "$DATA/idle.sql" -n >"$DATA/idle-$t.out" 2>&1 &
  IDLE=$!
  sleep 15
  R[idle,$t]=$(rss_mb "$(pid_of "$t")")
  R[idle_conns,$t]=$(psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bench'")
  wait "$IDLE" || { tail -5 "$DATA/idle-$t.out"; exit 1; }
done
echo "idle: countersign ${R[idle,countersign]} MB (${R[idle_conns,countersign]} upstream), production gateway ${R[idle,production]} MB, pgbouncer ${R[idle,pgbouncer]} MB"

# --- the report ---------------------------------------------------------------------
select_table="| clients | mode | direct | PgBouncer | Countersign | with masking | production shape | PgBouncer / direct | Countersign / direct | **Countersign / PgBouncer** | masking / PgBouncer | **production / PgBouncer** |
|---|---|---|---|---|---|---|---|---|---|---|---|"
for clients in 1 8 32; do
  for mode in simple extended prepared; do
    d=$(echo "${R[select,$clients,$mode,direct]}" | median)
    b=$(echo "${R[select,$clients,$mode,pgbouncer]}" | median)
    c=$(echo "${R[select,$clients,$mode,countersign]}" | median)
    m=$(echo "${R[select,$clients,$mode,masked]}" | median)
    q=$(echo "${R[select,$clients,$mode,production]}" | median)
    select_table+="
| $clients | $mode | ${d%.*} | ${b%.*} | ${c%.*} | ${m%.*} | ${q%.*} | $(ratio "$b" "$d")× | $(ratio "$c" "$d")× | **$(ratio "$c" "$b")×** | $(ratio "$m" "$b")× | **$(ratio "$q" "$b")×** |"
  done
done
td=$(echo "${R[tpcb,direct]}" | median); tb=$(echo "${R[tpcb,pgbouncer]}" | median); tc=$(echo "${R[tpcb,countersign]}" | median); tq=$(echo "${R[tpcb,production]}" | median)
xd=$(echo "${R[transfer,direct]}" | median); xb=$(echo "${R[transfer,pgbouncer]}" | median)
xc=$(echo "${R[transfer,countersign]}" | median); xm=$(echo "${R[transfer,masked]}" | median)
xq=$(echo "${R[transfer,production]}" | median)
cd_=$(echo "${R[connect,direct]}" | median); cb=$(echo "${R[connect,pgbouncer]}" | median); cc=$(echo "${R[connect,countersign]}" | median)
pd=${R[connect_p50,direct]}; pb=${R[connect_p50,pgbouncer]}; pc=${R[connect_p50,countersign]}
echo "$select_table"

section="## Gateway vs. direct vs. PgBouncer

Measured $(date -u +%Y-%m-%d) on $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}')
(a private cluster started by the script), PgBouncer $("$PGBOUNCER" --version 2>/dev/null | head -n1 | awk '{print $2}'), scale 10.
Command: \`tests/bench/gateway.sh $SECS $ROUNDS\`: every cell is the median of $ROUNDS rounds of $SECS s,
the targets alternating inside each round; after each pgbench run the script waits until the
machine is quiet (*settle* in the raw values: for Countersign, its audit store catching up with the
statements of the run; pgbench's TPS does not include that time). PgBouncer: session mode, SCRAM to
clients and upstream.
Countersign: \`countersign dev\` (release; its control plane and SQLite audit store in the same process,
on the same 2 cores as PostgreSQL and pgbench), audit of every statement on (spool, upload, chain),
three guardrails, and a mask rule that matches no pgbench column; *with masking*: a second resource
whose policy hashes \`pgbench_accounts.abalance\`, the column \`pgbench -S\` selects, in every row;
*production shape*: \`countersign control-plane\` (its store a database in the same PostgreSQL
cluster) and \`countersign gateway\` as separate processes, with the policy of *Countersign*.
Client to proxy: plain TCP, except for new connections (TLS).

### pgbench -S (TPS)

$select_table

### pgbench TPC-B, 8 clients (TPS)

| direct | PgBouncer | Countersign | production shape | PgBouncer / direct | Countersign / direct | **Countersign / PgBouncer** | **production / PgBouncer** |
|---|---|---|---|---|---|---|---|
| ${td%.*} | ${tb%.*} | ${tc%.*} | ${tq%.*} | $(ratio "$tb" "$td")× | $(ratio "$tc" "$td")× | **$(ratio "$tc" "$tb")×** | **$(ratio "$tq" "$tb")×** |

### 1,000,000-row transfer (psql, wall seconds)

Each cell: the median of $((3 * ROUNDS)) transfers, the targets alternating.

| direct | PgBouncer | Countersign | with masking | production shape | Countersign / direct (target ≤ 1.25×) | masking / direct (target ≤ 1.3×) | production / direct |
|---|---|---|---|---|---|---|---|
| $xd | $xb | $xc | $xm | $xq | $(ratio "$xc" "$xd")× | $(ratio "$xm" "$xd")× | $(ratio "$xq" "$xd")× |

### New connections over TLS (ms)

| measure | direct | PgBouncer | Countersign | Countersign − direct |
|---|---|---|---|---|
| p50 of \`psql -c 'SELECT 1'\`, $(( 40 * ROUNDS )) connections each (target ≤ 5 ms) | $pd | $pb | $pc | **$(awk -v a="$pc" -v b="$pd" 'BEGIN { printf "%.2f", a - b }') ms** |
| pgbench -S -C, mean connection time | $cd_ | $cb | $cc | $(awk -v a="$cc" -v b="$cd_" 'BEGIN { printf "%.2f", a - b }') ms |

Direct and PgBouncer: TLS and SCRAM. Countersign: TLS, the access token verified by the control plane,
and SCRAM to the upstream. The psql samples include psql's own start-up (the same for every
target); pgbench reports only a mean. The client's side differs: to PostgreSQL and PgBouncer,
psql computes SCRAM (4,096 PBKDF2 rounds); to Countersign it sends the access token over TLS
and the gateway does the SCRAM exchange with the upstream, so a new connection can be cheaper
for the client through Countersign than direct.

### 1,000 idle client connections (resident memory)

| | before | with 1,000 idle clients | upstream connections |
|---|---|---|---|
| Countersign gateway, production shape (the gateway process alone; target ≤ 100 MB) | ${IDLE_BASE[production]} MB | ${R[idle,production]} MB | ${R[idle_conns,production]} |
| Countersign \`dev\` (the whole process, control plane and SQLite store included) | ${IDLE_BASE[countersign]} MB | ${R[idle,countersign]} MB | ${R[idle_conns,countersign]} |
| PgBouncer | ${IDLE_BASE[pgbouncer]} MB | ${R[idle,pgbouncer]} MB | ${R[idle_conns,pgbouncer]} |

Countersign opens each client's upstream connection at startup (it authenticates the client and
its upstream before the first query); PgBouncer, even in session mode, opens one only when a
client sends its first query, so idle clients cost it no upstream connection.

Raw values, one per run (pgbench and connections: one per round; the transfer: three per round), in TPS, seconds, ms or MB by workload: $(for k in "${!R[@]}"; do printf '%s: %s\n' "$k" "${R[$k]}"; done | sort -V | tr -s ' ' | paste -sd';' | sed 's/;/; /g')
"
write_section "Gateway vs. direct vs. PgBouncer" "$section"
