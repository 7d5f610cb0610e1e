#!/usr/bin/env bash
# What one audit row costs the PostgreSQL store, by index. Runs pgbench -S (simple, then
# prepared) through Countersign in the production shape, keeps the audit rows each run stored,
# then inserts them again, in one INSERT … SELECT each, into empty copies of `audit_events` that
# carry more and more of its indexes, and reports the time per row. The last step, production,
# also stores the parameterized texts once in a copy of `audit_texts`, as ingest does. Also
# timed: the design before migration m0012, a trigram index over every event's text.
#
# Usage: tests/bench/store-rows.sh [seconds-per-pgbench-run] [rounds]
# Runs against a private PostgreSQL cluster (tests/bench/proxies.sh), one backend at a time on
# an idle machine, prints the table and rewrites the "Audit store: cost per row, by index"
# section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
SECS=${1:-8}
ROUNDS=${2:-2}
BIN=${CARGO_TARGET_DIR:-target}/release/countersign
cargo build --release --locked --bin countersign >/dev/null
BIN=$(realpath "$BIN")
. tests/bench/proxies.sh
start_production rows "$BIN"
P=(env PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d cs_rows -Atq -v ON_ERROR_STOP=1)
"${P[@]}" -c "CREATE EXTENSION IF NOT EXISTS pg_trgm"

# The indexes the migrations gave audit_events, each rewritten onto t; $1 selects them.
indexes() {
  "${P[@]}" -c "SELECT string_agg(regexp_replace(indexdef, 'INDEX \S+ ON \S+', 'INDEX ON t'), '; '
    ORDER BY indexname) FROM pg_indexes WHERE tablename = 'audit_events' AND $1"
}
PKEY=$(indexes "indexname = 'audit_events_pkey'")
BTREES=$(indexes "indexdef NOT LIKE '% USING gin %'")
TRGM=$(indexes "indexdef LIKE '% USING gin %'")
[ -n "$PKEY" ] && [ -n "$TRGM" ] || { echo "audit_events lacks its primary key or trigram index"; exit 1; }
BTREES+=";"
# The B-trees before migration m0012, which had no digest index.
OLD_BTREES=$(indexes "indexdef NOT LIKE '% USING gin %' AND indexname <> 'audit_events_statement_digest'");
OLD_BTREES+=";"
# The CHECK that holds each event's digest to its text (migration m0012).
CHECKS=$("${P[@]}" -c "SELECT string_agg('ALTER TABLE t ADD ' || pg_get_constraintdef(oid), '; ')
  FROM pg_constraint WHERE conrelid = 'audit_events'::regclass AND contype = 'c'")
[ -n "$CHECKS" ] || { echo "audit_events lacks its digest CHECK"; exit 1; }
declare -A VARIANT=(
  [1-heap]=""
  [2-primary-key]="$PKEY"
  [3-all-btrees]="$BTREES"
  [4-production]="$BTREES $TRGM; $CHECKS; CREATE TABLE d (LIKE audit_texts INCLUDING ALL)"
  [5-every-text-trgm]="$OLD_BTREES ${TRGM% WHERE *}"
)
# Production: the events, and each parameterized text once (ingest's INSERT … ON CONFLICT).
TEXTS_INSERT="WITH r AS (SELECT * FROM src), i AS (INSERT INTO t SELECT * FROM r)
INSERT INTO d SELECT DISTINCT ON (statement_digest) statement_digest, statement
FROM r WHERE statement_digest IS NOT NULL ON CONFLICT (digest) DO NOTHING"

# insert_ms SRC VARIANT: milliseconds to insert SRC's rows into a fresh table with VARIANT.
insert_ms() {
  local src=$1 v=$2 sql="INSERT INTO t SELECT * FROM src"
  [ "$v" = 4-production ] && sql=$TEXTS_INSERT
  "${P[@]}" -c "DROP TABLE IF EXISTS t, d" -c "CREATE TABLE t (LIKE audit_events)" >/dev/null
  [ -n "${VARIANT[$v]}" ] && "${P[@]}" -c "${VARIANT[$v]}" >/dev/null
  "${P[@]}" -c CHECKPOINT >/dev/null
  { echo '\timing on'; echo "CREATE TEMP VIEW src AS SELECT * FROM $src;"; echo "$sql;"; } |
    "${P[@]}" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n1
}

declare -A R ROWS DISTINCT DIGESTS
MODES=(simple prepared)
for mode in "${MODES[@]}"; do
  mark=$("${P[@]}" -c "SELECT now()")
  bench_env rows env PGSSLMODE=disable pgbench -S -M "$mode" -c 8 -j 2 -T "$SECS" -n >/dev/null 2>&1
  upload_drained rows
  "${P[@]}" -c "CREATE TABLE rows_$mode AS SELECT * FROM audit_events WHERE received_at >= '$mark'"
  "${P[@]}" -c "VACUUM ANALYZE rows_$mode"
  ROWS[$mode]=$("${P[@]}" -c "SELECT count(*) FROM rows_$mode")
  DISTINCT[$mode]=$("${P[@]}" -c "SELECT count(DISTINCT statement) FROM rows_$mode")
  DIGESTS[$mode]=$("${P[@]}" -c "SELECT count(DISTINCT statement_digest) FROM rows_$mode")
done
for round in $(seq 1 "$ROUNDS"); do
  for v in $(printf '%s\n' "${!VARIANT[@]}" | sort); do
    for mode in "${MODES[@]}"; do
      ms=$(insert_ms "rows_$mode" "$v")
      R[$v,$mode]+="$(awk -v ms="$ms" -v n="${ROWS[$mode]}" 'BEGIN { printf "%.1f", ms * 1000 / n }') "
    done
    echo "round $round $v: simple ${R[$v,simple]}µs/row, prepared ${R[$v,prepared]}µs/row"
  done
done

table="| indexes | simple: µs per row | prepared: µs per row |
|---|---|---|"
for v in $(printf '%s\n' "${!VARIANT[@]}" | sort); do
  table+="
| ${v#*-} | $(echo "${R[$v,simple]}" | median) | $(echo "${R[$v,prepared]}" | median) |"
done
echo "$table"
section="## Audit store: cost per row, by index

Measured $(date -u +%Y-%m-%d) on $(nproc) cores; PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (a private cluster).
Command: \`tests/bench/store-rows.sh $SECS $ROUNDS\`. The rows are the audit trail of two $SECS-second
pgbench -S runs at 8 clients through Countersign (production shape): simple, ${ROWS[simple]} rows with
${DISTINCT[simple]} distinct statement texts (the values differ), and prepared, ${ROWS[prepared]} rows
with ${DISTINCT[prepared]}, ${DIGESTS[prepared]} of them parameterized. Each cell inserts all of one run's rows with one
\`INSERT … SELECT\` into an empty table with the indexes named (cumulative down to *production*,
which is what \`audit_events\` has, with each parameterized text stored once in a copy of
\`audit_texts\`), on an idle machine, and is the median of $ROUNDS rounds in µs per row.
*every-text-trgm*: the B-trees and a trigram index over every event's text, the store before
migration m0012 (without its digest index and CHECK).

$table

Raw per round: $(for k in "${!R[@]}"; do printf '%s: %s\n' "$k" "${R[$k]}"; done | sort -V | tr -s ' ' | paste -sd';' | sed 's/;/; /g')
"
write_section "Audit store: cost per row, by index" "$section"
