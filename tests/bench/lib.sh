# Shared by the benchmark scripts: rewrite one "## TITLE" section of docs/benchmarks.md.
# Usage: write_section "TITLE" "SECTION TEXT (starting with ## TITLE)"
write_section() {
  local title=$1 section=$2 doc=docs/benchmarks.md
  [ -f "$doc" ] || printf '# Benchmarks\n\nEvery number here comes from a script under tests/bench/, run on this project'"'"'s 2-core machine.\n' >"$doc"
  python3 - "$doc" "$title" "$section" <<'PY'
import re, sys
path, title, section = sys.argv[1:4]
text = open(path).read()
pattern = re.compile(r"## " + re.escape(title) + r"\n.*?(?=\n## |\Z)", re.S)
if pattern.search(text):
    text = pattern.sub(lambda m: section.rstrip() + "\n", text)
else:
    text = text.rstrip() + "\n\n" + section
open(path, "w").write(text)
PY
  echo "wrote $doc"
}

# The benchmarks' access rule and guardrails (a realistic policy that denies nothing pgbench or
# psql sends), as policy TOML on stdout; each script appends its own mask rules.
guardrail_policy() {
  cat <<'TOML'
[[access]]
name = "bench"
members = ["*"]
level = "read-write"

[[guardrail]]
name = "no-drop"
match = { kinds = ["drop", "truncate"] }
action = "deny"

[[guardrail]]
name = "deletes-need-where"
match = { kinds = ["delete", "update"], without_where = true }
action = "deny"

[[guardrail]]
name = "no-privilege-changes"
match = { kinds = ["grant", "revoke"] }
action = "deny"
TOML
}

# tps: pgbench's TPS from its output on stdin. median: the median of the space-separated numbers
# on stdin, as given (the lower middle one of an even count).
tps() { sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -n1; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR) printf "%s", a[int((NR+1)/2)]}'; }

# busy_ticks: CPU ticks (1/100 s) the machine has spent busy (user, nice, system, irq, softirq);
# all_ticks: the same with idle and iowait.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
all_ticks() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }

# settle: waits until the machine is quiet (under 15 % of its CPUs busy over half a second; at
# most a minute). Run between targets, so that work a run leaves behind (Countersign's audit
# upload catching up with the statements it let through) is not charged to the next target.
# Prints the seconds it waited.
settle() {
  local a b t0
  t0=$(date +%s.%N)
  for _ in $(seq 1 120); do
    a="$(busy_ticks) $(all_ticks)"
    sleep 0.5
    b="$(busy_ticks) $(all_ticks)"
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x); split(b, y); exit !((y[2] - x[2]) > 0 && (y[1] - x[1]) / (y[2] - x[2]) < 0.15) }' && break
  done
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a - 0.5 }'
}
