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
