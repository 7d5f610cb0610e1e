#!/usr/bin/env bash
# Where each transaction's CPU goes, by process, in the production shape: `countersign
# control-plane` (its store a database in the same PostgreSQL cluster) and `countersign gateway`,
# under pgbench -S (8 clients, or CLIENTS; or the TPC-B script, SCRIPT=tpcb). For each run it reads the CPU time of the gateway, of the
# control plane, of the PostgreSQL backends serving the control plane's store (audit inserts)
# and of the whole machine, and divides by the transactions pgbench completed: µs of CPU per
# transaction. Direct PostgreSQL and PgBouncer (session mode) run alongside as references, as does
# PgBouncer given the audit work the gateway does (*pgbouncer+audit*: while pgbench runs,
# control-plane/examples/audit_bench.rs `follow` sends a third Countersign instance's control plane
# one statement event for each query PgBouncer serves, as the gateway's uploader would), and
# two Countersign instances side by side: *before* (a binary given as the third argument, e.g.
# one built from an earlier commit, and/or a setting of its gateway) and *after* (this
# checkout's release build). Targets alternate inside each round; each cell is the median of
# the rounds.
#
# Usage: tests/bench/cpu.sh [seconds-per-run] [rounds] [before-binary]
# Without a before-binary, this checkout's build runs in both columns. CLIENTS (default 8) sets
# pgbench's clients; BEFORE_GATEWAY, one line added to the before instance's gateway config,
# compares a setting (e.g. BEFORE_GATEWAY='session_threads = 2'). SCRIPT=tpcb runs pgbench's
# TPC-B script (simple protocol) instead of -S in its three protocol modes. Runs against a private
# PostgreSQL cluster started by the script, installs PgBouncer from Debian's packages when
# missing (tests/bench/proxies.sh), prints the table and rewrites the section "CPU per
# transaction, by process (production shape)" of docs/benchmarks.md (with ", TPC-B" when SCRIPT
# is tpcb, and ", N clients", or ", 1 client", in its title when CLIENTS is not 8).
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
SECS=${1:-8}
ROUNDS=${2:-3}
CLIENTS=${CLIENTS:-8}
SCRIPT=${SCRIPT:-select}
case $SCRIPT in select|tpcb) ;; *) echo "SCRIPT: select or tpcb" >&2; exit 2 ;; esac
BEFORE_GATEWAY=${BEFORE_GATEWAY:-}
case $BEFORE_GATEWAY in *$'\n'*|*\'*) echo "BEFORE_GATEWAY: one line, without single quotes" >&2; exit 2 ;; esac
BIN=${CARGO_TARGET_DIR:-target}/release/countersign
cargo build --release --locked --bin countersign >/dev/null
cargo build --release --locked --example audit_bench -p countersign-control-plane >/dev/null
FOLLOW=$(realpath "${CARGO_TARGET_DIR:-target}/release/examples/audit_bench")
BIN_BEFORE=$(realpath "${3:-$BIN}")
BIN=$(realpath "$BIN")
. tests/bench/proxies.sh
start_production before "$BIN_BEFORE" "$BEFORE_GATEWAY"
start_production after "$BIN"
# The control plane that stores PgBouncer's audit (its gateway stays idle).
start_production audited "$BIN"

for t in before after; do
  v=$(bench_env $t env PGSSLMODE=disable psql -Atc "SELECT abalance FROM pgbench_accounts WHERE aid = 1")
  [ "$v" = 0 ] || { echo "$t does not answer: $v"; tail "$DATA/gw-$t.log"; exit 1; }
done

# CPU ticks (1/100 s) of a process; of the backends connected to database $1 (the machine's:
# busy_ticks, lib.sh); of the whole private cluster: the postmaster, its live children and
# those it has reaped (backends of finished pgbench runs, autovacuum workers).
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
pg_ticks() { local s=0 p; for p in $(pgrep -f "postgres: postgres $1 "); do s=$((s + $(ticks "$p" 2>/dev/null || echo 0))); done; echo $s; }
POSTMASTER=$(head -n1 "$DATA/pg/postmaster.pid")
cluster_ticks() {
  # Read again when a child was reaped during the scan: it would be in neither sum.
  local reaped before s p
  while :; do
    reaped=$(awk '{print $16+$17}' "/proc/$POSTMASTER/stat")
    s=0
    for p in $(pgrep -P "$POSTMASTER"); do s=$((s + $(ticks "$p" 2>/dev/null || echo 0))); done
    before=$reaped
    reaped=$(awk '{print $16+$17}' "/proc/$POSTMASTER/stat")
    [ "$reaped" = "$before" ] && break
  done
  echo $((s + reaped + $(ticks "$POSTMASTER")))
}
# charged FILE CMD [ARGS...]: CMD with its exit status kept; its CPU ticks, reaped by the
# wrapping shell, go to FILE.
charged=(sh -c '"$@"; r=$?; awk "{print \$16+\$17}" "/proc/$$/stat" >"$0"; exit $r')
# pgbench with its arguments, its CPU ticks to PGBENCH_TICKS.
PGBENCH_TICKS="$DATA/pgbench.ticks"
timed_pgbench=("${charged[@]}" "$PGBENCH_TICKS" pgbench)
# follow_start MODE / follow_stop: the audit client of target pgbouncer+audit, started before
# pgbench and stopped after it (it sends what is left and waits for its acknowledgement); its
# CPU ticks go to FOLLOW_TICKS (charged). Should the script stop between
# the two, the client ends with an error once the exit cleanup has stopped PgBouncer.
FOLLOW_TICKS="$DATA/follow.ticks"
follow_start() {
  rm -f "$DATA/follow.stop" "$DATA/follow.out" "$DATA/follow.ready"
  "${charged[@]}" "$FOLLOW_TICKS" "$FOLLOW" follow --grpc "${GRPC[audited]}" --token "${SECRET[audited]}" \
    --stats "host=127.0.0.1 port=$BOUNCER_PORT user=bench password=$PASSWORD dbname=pgbouncer" \
    --database bench --script "$SCRIPT" \
    --protocol "$(case $1 in simple|tpcb) echo simple ;; *) echo extended ;; esac)" \
    --sessions "$CLIENTS" --stop-file "$DATA/follow.stop" --ready-file "$DATA/follow.ready" \
    >"$DATA/follow.out" 2>&1 &
  FOLLOW_PID=$!
  for _ in $(seq 1 100); do [ -e "$DATA/follow.ready" ] && break; sleep 0.1; done
  [ -e "$DATA/follow.ready" ] || { cat "$DATA/follow.out"; exit 1; }
  rm -f "$DATA/follow.ready"
}
follow_stop() {
  touch "$DATA/follow.stop"
  wait "$FOLLOW_PID" || { echo "the audit client failed:"; cat "$DATA/follow.out"; exit 1; }
}
per_tx() { awk -v t="$1" -v tps="$2" -v s="$SECS" 'BEGIN { if (tps > 0) printf "%.0f", t * 1e4 / (tps * s); else printf "-" }'; }
# Of target $t: its proxy's process (the gateway, or PgBouncer), its control plane, its store's
# backends; 0 where it has none.
proxy_ticks() { case $t in before|after) ticks "${GWPID[$t]}" ;; pgbouncer*) ticks "$(cat "$DATA/pgbouncer.pid")" ;; *) echo 0 ;; esac; }
cp_ticks() { case $t in before|after) ticks "${CPPID[$t]}" ;; pgbouncer+audit) ticks "${CPPID[audited]}" ;; *) echo 0 ;; esac; }
store_ticks() { case $t in before|after) pg_ticks "cs_$t" ;; pgbouncer+audit) pg_ticks cs_audited ;; *) echo 0 ;; esac; }
declare -A R
TARGETS=(direct pgbouncer pgbouncer+audit before after)
MODES=(simple extended prepared)
[ "$SCRIPT" = select ] || MODES=(tpcb)
# pgbench's arguments for a mode: -S in a protocol mode, or the TPC-B script.
script_args() { case $1 in tpcb) echo "-M simple" ;; *) echo "-S -M $1" ;; esac; }
for round in $(seq 1 "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    for t in "${TARGETS[@]}"; do
      g0=$(proxy_ticks); c0=$(cp_ticks); s0=$(store_ticks); m0=$(busy_ticks); p0=$(cluster_ticks)
      [ "$t" = pgbouncer+audit ] && follow_start "$mode"
      v=$(bench_env "${t%+audit}" env PGSSLMODE=disable "${timed_pgbench[@]}" $(script_args "$mode") -c "$CLIENTS" -j 2 -T "$SECS" -n 2>/dev/null | tps)
      # When the audit store falls behind, the upload goes on after pgbench ends: that CPU
      # belongs to these transactions, so a Countersign run is measured until it is done
      # (PgBouncer's audit client, until it has sent everything and had it acknowledged).
      d0=$(date +%s.%N)
      case $t in
        before|after) upload_drained "$t"; late=0.5 ;;
        pgbouncer+audit) follow_stop; late=0 ;;
        *) late= ;;
      esac
      [ -z "$late" ] || R[$mode,$t,drain]+="$(awk -v a="$d0" -v b="$(date +%s.%N)" -v l="$late" 'BEGIN { printf "%.1f", b - a - l }') "
      # And until the machine is quiet: what a run leaves behind (WAL writes, autovacuum, the
      # exit of pgbench's backends) is charged to it, not to the next run.
      settle >/dev/null
      mt=$(( $(busy_ticks) - m0 )); pg=$(( $(cluster_ticks) - p0 )); pgb=$(cat "$PGBENCH_TICKS")
      gw=$(( $(proxy_ticks) - g0 )); cp=$(( $(cp_ticks) - c0 )); st=$(( $(store_ticks) - s0 ))
      fl=0; [ "$t" = pgbouncer+audit ] && fl=$(cat "$FOLLOW_TICKS")
      R[$mode,$t,tps]+="$v "
      R[$mode,$t,total]+="$(per_tx "$mt" "$v") "
      R[$mode,$t,pgbench]+="$(per_tx "$pgb" "$v") "
      R[$mode,$t,pg]+="$(per_tx "$pg" "$v") "
      R[$mode,$t,rest]+="$(per_tx $((mt - pgb - pg - gw - cp - fl)) "$v") "
      case $t in
        before|after|pgbouncer+audit)
          R[$mode,$t,gw]+="$(per_tx "$gw" "$v") "
          R[$mode,$t,cp]+="$(per_tx "$cp" "$v") "
          R[$mode,$t,store]+="$(per_tx "$st" "$v") " ;;&
        pgbouncer+audit) R[$mode,$t,client]+="$(per_tx "$fl" "$v") " ;;
        pgbouncer) R[$mode,$t,gw]+="$(per_tx "$gw" "$v") " ;;
      esac
    done
    echo "round $round $mode: $(for t in "${TARGETS[@]}"; do printf '%s %s tps %s µs/tx; ' "$t" "$(echo "${R[$mode,$t,tps]}" | awk '{print $NF}')" "$(echo "${R[$mode,$t,total]}" | awk '{print $NF}')"; done)"
  done
done

m() { [ -z "${R[$1]:-}" ] || echo "${R[$1]}" | median; }
table="| mode | target | TPS | machine µs/tx | pgbench | PostgreSQL | of which audit store backends | proxy | control plane | audit client | rest | upload catch-up (s) | / PgBouncer TPS | / PgBouncer+audit TPS |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
for mode in "${MODES[@]}"; do
  b=$(m "$mode,pgbouncer,tps"); ba=$(m "$mode,pgbouncer+audit,tps")
  for t in "${TARGETS[@]}"; do
    v=$(m "$mode,$t,tps")
    total=$(m "$mode,$t,total"); pgb=$(m "$mode,$t,pgbench"); pg=$(m "$mode,$t,pg")
    proxy=$(m "$mode,$t,gw"); cp=$(m "$mode,$t,cp"); rest=$(m "$mode,$t,rest")
    case $t in
      before|after) parts="$(m "$mode,$t,store") | $proxy | $cp | - | $rest | $(m "$mode,$t,drain")" ;;
      pgbouncer+audit) parts="$(m "$mode,$t,store") | $proxy | $cp | $(m "$mode,$t,client") | $rest | $(m "$mode,$t,drain")" ;;
      pgbouncer) parts="- | $proxy | - | - | $rest | -" ;;
      *) parts="- | - | - | - | $rest | -" ;;
    esac
    table+="
| $mode | $t | ${v%.*} | $total | $pgb | $pg | $parts | $(ratio "$v" "$b") | $(ratio "$v" "$ba") |"
  done
done
echo "$table"
command="tests/bench/cpu.sh $SECS $ROUNDS${3:+ BEFORE}"
[ "$CLIENTS" = 8 ] || command="CLIENTS=$CLIENTS $command"
[ "$SCRIPT" = select ] || command="SCRIPT=$SCRIPT $command"
[ -z "$BEFORE_GATEWAY" ] || command="BEFORE_GATEWAY='$BEFORE_GATEWAY' $command"
clients_word=$([ "$CLIENTS" = 1 ] && echo client || echo clients)
title="CPU per transaction, by process (production shape$([ "$SCRIPT" = select ] || echo ", TPC-B")$([ "$CLIENTS" = 8 ] || echo ", $CLIENTS $clients_word"))"
workload=$([ "$SCRIPT" = select ] && echo "pgbench -S" || echo "pgbench's TPC-B script (simple protocol)")
section="## $title

Measured $(date -u +%Y-%m-%d) on $(nproc) cores; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (a private cluster), scale 10.
Command: \`$command\`: $workload at $CLIENTS $clients_word, $SECS s per run, targets
alternating, each cell the median of $ROUNDS rounds. *before* and *after* are two Countersign instances
side by side (${3:+before: \`$(basename "$BIN_BEFORE")\`, an earlier build; }${BEFORE_GATEWAY:+before: its gateway configured with \`$BEFORE_GATEWAY\`; }$([ -n "${3:-}$BEFORE_GATEWAY" ] || echo "before: the same build and settings, so the two differ only by the run's noise; ")after: this checkout), each a
\`countersign control-plane\` on its own database in the same cluster plus a \`countersign gateway\`,
with three guardrails and a mask rule that matches nothing, audit of every statement on. µs/tx is
CPU time over completed transactions: the machine's (everything), pgbench's own, the whole
PostgreSQL cluster's (every backend, reaped ones included, and the background processes: WAL
writer, checkpointer, autovacuum), of which the backends serving the control plane's store (the
audit inserts), the proxy process's (the gateway, or PgBouncer) and the control plane's; *rest* is
the machine's CPU that none of these processes was charged with (the kernel's work in
interrupts, the benchmark's own tools, the idle Countersign instances), each a median
of per-round values. A run is measured until the machine is quiet again, so what it leaves
behind (WAL writes, autovacuum) is charged to it. A Countersign run is measured until its gateway has
uploaded every event (its upload counter still for half a second): *upload catch-up* is how long
that took after pgbench ended, the audit store falling behind the statements.
*pgbouncer+audit* is PgBouncer given the audit work the gateway does: while pgbench runs through
PgBouncer, an audit client (\`audit_bench follow\`, control-plane/examples/audit_bench.rs) reads
PgBouncer's query count every 20 ms and sends a third Countersign instance's control plane one
statement event for each new query, one batch in flight, as the gateway's uploader does (simple
mode: each text with its own values; extended and prepared: the parameterized text). Its store
backends, control plane and the client itself (*audit client*) are charged to it; its catch-up is
the time from pgbench's end to the last batch's acknowledgement.

$table

Raw per round: $(for k in "${!R[@]}"; do printf '%s: %s\n' "$k" "${R[$k]}"; done | sort -V | tr -s ' ' | paste -sd';' | sed 's/;/; /g')
"
write_section "$title" "$section"
