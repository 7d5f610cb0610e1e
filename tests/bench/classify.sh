#!/usr/bin/env bash
# Statement classification cost (µs per statement, uncached and cached), with
# the release build of policy/examples/classify_bench.rs. Rewrites the
# "Statement classification" section of docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/bench/lib.sh
out=$(cargo run --release --locked -q -p countersign-policy --example classify_bench)
echo "$out"
section="## Statement classification

Measured $(date -u +%Y-%m-%d) on $(nproc) cores. Command: \`tests/bench/classify.sh\`
(\`cargo run --release -p countersign-policy --example classify_bench\`). Uncached is a full
\`pg_query\` parse plus the facts walk; cached is a hit in the per-session LRU keyed by text;
by shape is a text never seen whose shape (the text with its constants masked by PostgreSQL's
lexer) is cached, as \`pgbench -M simple\` sends them (\`-\` where the shape is not used: no
constants, or facts that depend on a constant's value).

\`\`\`
$out
\`\`\`
"
write_section "Statement classification" "$section"
