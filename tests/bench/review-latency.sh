#!/usr/bin/env bash
# Approval-to-release latency with two control-plane replicas (A holds the
# gateway's WatchReview stream, approvals go to B), with Redis pub/sub and
# then with Redis stopped (polling). Rewrites the "Review approval latency"
# section of docs/benchmarks.md.
#
# Usage: tests/bench/review-latency.sh [approvals]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
N=${1:-200}
out=$(REVIEW_BENCH_N=$N cargo test --release --locked -q -p countersign-cli --test e2e_replicas -- \
  --ignored review_latency_bench --nocapture 2>&1 | grep '^BENCH')
echo "$out"
row() { awk -v l="$1" '$2 == l { for (i = 3; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } printf "| %s | %s | %s | %s | %s |", l, v["n"], v["p50_ms"], v["p99_ms"], v["max_ms"] }' <<<"$out"; }
section="## Review approval latency: two replicas

Measured $(date -u +%Y-%m-%d) on $(nproc) cores. Command: \`tests/bench/review-latency.sh $N\`.
Two \`countersign control-plane\` replicas (release) share one PostgreSQL and one Redis; the
gateway watches the held statement through replica A; bob approves over HTTP on replica B.
Latency is from sending the approval request to alice's statement completing (psql-equivalent
tokio-postgres client), so it includes the HTTP round trip to B.

| bus | approvals | p50 ms | p99 ms | max ms |
|---|---|---|---|---|
$(row redis)
$(row polling)

Target: p99 < 100 ms with Redis. Without Redis, replica A re-reads the review every 500 ms,
so latency is bounded by the poll interval; nothing is lost.
"
write_section "Review approval latency: two replicas" "$section"
