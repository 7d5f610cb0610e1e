#!/usr/bin/env bash
# A 1,000,000-row SELECT with one masked column: direct vs. the gateway with masking (a partial
# mask plus detectors, or a hash) vs. the gateway without, side by side in one run, plus the
# gateway process's peak RSS.
#
# Usage: tests/bench/mask-transfer.sh [rounds]
# Builds the release binary, creates a scratch database with a 1M-row `people` table, and
# starts one `countersign dev` (audit on) with three resources on that database: `masked`, where
# a [[mask]] rule keeps the last 4 characters of people.email and detectors scan every value,
# `hashed`, where a rule replaces people.email with its keyed hash, and `plain`, where no mask
# rule applies (its policy still has guardrails). Each run is `psql -At -c "SELECT ..."`
# to /dev/null; targets alternate. Rewrites the "1M-row transfer" section of
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
ROUNDS=${1:-3}
DB="cs_bench_mask_$$"
BIN=${CARGO_TARGET_DIR:-target}/release/countersign
SQL="SELECT id, name, email, city FROM people"

cargo build --release --locked --bin countersign >/dev/null
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
DATA=$(mktemp -d)
cleanup() {
  [ -n "${DEV_PID:-}" ] && kill "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT
psql -h 127.0.0.1 -U postgres -q -d "$DB" <<'SQL' >/dev/null
CREATE TABLE people (id int PRIMARY KEY, name text, email text, city text);
INSERT INTO people
  SELECT i, 'Person ' || i, 'person' || i || '@example.com', (ARRAY['Lyon','Leeds','Nantes','Porto'])[1 + i % 4]
  FROM generate_series(1, 1000000) i;
VACUUM ANALYZE people;
SQL
{ guardrail_policy; cat <<'TOML'; } >"$DATA/policy.toml"

[[mask]]
name = "people-email"
columns = ["public.people.email"]
style = "partial"
keep = 4
resources = ["masked"]

[[mask]]
name = "pii-anywhere"
detect = ["email", "card_number", "us_ssn"]
resources = ["masked"]

[[mask]]
name = "people-email-hash"
columns = ["public.people.email"]
style = "hash"
resources = ["hashed"]
TOML
URL="postgres://postgres@127.0.0.1:5432/$DB?sslmode=disable"
"$BIN" dev --data-dir "$DATA/dev" --upstream "masked=$URL" --upstream "hashed=$URL" --upstream "plain=$URL" --policy "$DATA/policy.toml" \
  --pg-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 --admin-token "bench-admin-token-0123456789" \
  >"$DATA/out" 2>"$DATA/err" &
DEV_PID=$!
for _ in $(seq 1 100); do grep -q '^ready' "$DATA/out" 2>/dev/null && break; sleep 0.1; done
grep -q '^ready' "$DATA/out" || { cat "$DATA/err"; exit 1; }
PG=$(sed -n 's/^pg=//p' "$DATA/out"); GW_PORT=${PG##*:}
TOKEN=$(sed -n 's/^user_token=//p' "$DATA/out"); USER_ID=$(sed -n 's/^user=//p' "$DATA/out")

# Check the masking is really on (and off) before timing anything.
first_masked=$(PGPASSWORD="$TOKEN" psql -h 127.0.0.1 -p "$GW_PORT" -U "$USER_ID" -At -c "SELECT email FROM people WHERE id = 1" masked)
first_plain=$(PGPASSWORD="$TOKEN" psql -h 127.0.0.1 -p "$GW_PORT" -U "$USER_ID" -At -c "SELECT email FROM people WHERE id = 1" plain)
[ "$first_masked" = "****.com" ] || { echo "masking is not on: $first_masked"; exit 1; }
[ "$first_plain" = "person1@example.com" ] || { echo "plain is masked: $first_plain"; exit 1; }
first_hashed=$(PGPASSWORD="$TOKEN" psql -h 127.0.0.1 -p "$GW_PORT" -U "$USER_ID" -At -c "SELECT email FROM people WHERE id = 1" hashed)
[[ "$first_hashed" =~ ^h:[0-9a-f]{24}$ ]] || { echo "hashing is not on: $first_hashed"; exit 1; }

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null || return 1; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'; }
declare -A results
for round in $(seq 1 "$ROUNDS"); do
  d=$(secs psql -h 127.0.0.1 -U postgres -At -o /dev/null -c "$SQL" "$DB")
  m=$(PGPASSWORD="$TOKEN" secs psql -h 127.0.0.1 -p "$GW_PORT" -U "$USER_ID" -At -o /dev/null -c "$SQL" masked)
  h=$(PGPASSWORD="$TOKEN" secs psql -h 127.0.0.1 -p "$GW_PORT" -U "$USER_ID" -At -o /dev/null -c "$SQL" hashed)
  p=$(PGPASSWORD="$TOKEN" secs psql -h 127.0.0.1 -p "$GW_PORT" -U "$USER_ID" -At -o /dev/null -c "$SQL" plain)
  results[direct]+="$d "; results[masked]+="$m "; results[hashed]+="$h "; results[plain]+="$p "
  echo "round $round: direct ${d}s, gateway+masking ${m}s, gateway+hash ${h}s, gateway without masking ${p}s"
done
RSS_KB=$(awk '/VmHWM/ {print $2}' "/proc/$DEV_PID/status")

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]}'; }
r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
d=$(echo "${results[direct]}" | median); m=$(echo "${results[masked]}" | median); p=$(echo "${results[plain]}" | median)
h=$(echo "${results[hashed]}" | median)
table="| target | wall time (s) | / direct |
|---|---|---|
| direct | $d | 1.00× |
| gateway, masking on (1 masked column + 3 detectors) | $m | $(r "$m" "$d")× |
| gateway, 1 column hashed | $h | $(r "$h" "$d")× |
| gateway, no mask rule | $p | $(r "$p" "$d")× |"
echo "$table"
echo "peak RSS of the countersign dev process: $((RSS_KB / 1024)) MiB"

section="## 1M-row transfer with a masked column

Measured $(date -u +%Y-%m-%d) on $(nproc) cores; PostgreSQL $(psql -h 127.0.0.1 -U postgres -Atc 'show server_version').
Command: \`tests/bench/mask-transfer.sh $ROUNDS\` (median of $ROUNDS alternating runs of
\`psql -At -o /dev/null -c \"$SQL\"\`, 1,000,000 rows of 4 columns). One \`countersign dev\`
(release build, audit on, guardrails in the policy) serves the gateway targets; on \`masked\`
a [[mask]] rule shows the last 4 characters of \`email\` and the email, card and SSN detectors
scan every other value; on \`hashed\` a rule replaces every \`email\` (each one distinct) with
its keyed hash (\`h:\` and the first 24 hex digits of its HMAC-SHA-256).

$table

Peak RSS of the whole \`countersign dev\` process (gateway, control plane and SQLite audit
store together) after all runs: **$((RSS_KB / 1024)) MiB**. Rows stream one at a time; nothing
holds a whole result.

Raw wall times per round (direct | masking | hash | no masking): ${results[direct]}| ${results[masked]}| ${results[hashed]}| ${results[plain]}
"
write_section "1M-row transfer with a masked column" "$section"
