//! The `match` table → [`Conditions`].

use regex::RegexBuilder;
use toml::de::DeValue;

use super::Value;
use super::report::{RuleCx, unknown_field};
use crate::facts::StatementKind;
use crate::rules::glob::NamePattern;
use crate::rules::rule::{Conditions, Flag};

const MATCH_FIELDS: &[&str] = &[
    "kinds",
    "tables",
    "functions",
    "without_where",
    "modifying_cte",
    "copy_program",
    "copy_file",
    "explain_analyze",
    "set_role",
    "opaque",
    "multi_statement",
    "groups",
    "except_groups",
    "access_levels",
    "regex",
];

/// Compiled regexes bigger than this are refused (the `regex` crate's default is 10 MiB; a
/// policy regex is a last-resort filter, not a grammar).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a `match` table; `None` (with errors reported) if anything in it is wrong.
pub(super) fn conditions(cx: &mut RuleCx<'_, '_>, value: &Value<'_>) -> Option<Conditions> {
    let DeValue::Table(table) = value.get_ref() else {
        cx.error(
            value.span(),
            "`match` must be a table, e.g. match = { kinds = [\"drop\"] }",
        );
        return None;
    };
    if table.is_empty() {
        cx.error(
            value.span(),
            "empty `match`: give at least one condition (a rule without conditions would \
             match every statement)",
        );
        return None;
    }

    let before = cx.error_count();
    let mut c = Conditions::default();
    for (key, value) in table {
        let field = key.get_ref().as_ref();
        match field {
            "kinds" => c.kinds = kinds(cx, value),
            "tables" | "functions" => {
                let patterns = name_patterns(cx, field, value);
                if field == "tables" {
                    c.tables = patterns;
                } else {
                    c.functions = patterns;
                }
            }
            "multi_statement" => c.multi_statement = cx.flag(field, value),
            "groups" => c.groups = names(cx, field, value),
            "except_groups" => c.except_groups = names(cx, field, value),
            "access_levels" => c.access_levels = names(cx, field, value),
            "regex" => c.regex = regex(cx, value),
            other => match Flag::from_name(other) {
                Some(flag) => {
                    if cx.flag(other, value) {
                        c.flags.push(flag);
                    }
                }
                None => cx.error(key.span(), unknown_field(other, "match", MATCH_FIELDS)),
            },
        }
    }
    (cx.error_count() == before).then_some(c)
}

fn kinds(cx: &mut RuleCx<'_, '_>, value: &Value<'_>) -> Vec<StatementKind> {
    let mut kinds = Vec::new();
    for (name, span) in cx.strings("kinds", value).unwrap_or_default() {
        match StatementKind::from_name(name) {
            Some(kind) => kinds.push(kind),
            None => {
                let valid: Vec<&str> = StatementKind::ALL.iter().map(|k| k.as_str()).collect();
                cx.error(
                    span,
                    format!(
                        "unknown statement kind {name:?} (valid: {})",
                        valid.join(", ")
                    ),
                );
            }
        }
    }
    kinds
}

fn name_patterns(cx: &mut RuleCx<'_, '_>, field: &str, value: &Value<'_>) -> Vec<NamePattern> {
    let mut patterns = Vec::new();
    for (pattern, span) in cx.strings(field, value).unwrap_or_default() {
        match NamePattern::new(pattern) {
            Ok(p) => patterns.push(p),
            Err(why) => cx.error(span, format!("bad pattern {pattern:?} in `{field}`: {why}")),
        }
    }
    patterns
}

/// Group and access-level names, compared exactly (case-sensitively) at decision time.
fn names(cx: &mut RuleCx<'_, '_>, field: &str, value: &Value<'_>) -> Vec<String> {
    cx.strings(field, value)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, _)| name.to_owned())
        .collect()
}

fn regex(cx: &mut RuleCx<'_, '_>, value: &Value<'_>) -> Option<regex::Regex> {
    let pattern = cx.string("regex", value)?;
    if pattern.is_empty() {
        cx.error(value.span(), "empty `regex` would match every statement");
        return None;
    }
    match RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(re) => Some(re),
        Err(err) => {
            cx.error(
                value.span(),
                format!("invalid regex {pattern:?}: {}", regex_reason(&err)),
            );
            None
        }
    }
}

/// The `regex` crate's syntax errors span several lines (pattern, caret, `error: ...`); keep
/// the one-line reason so `PolicyErrors` stays one error per line.
fn regex_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    let reason = text
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .map(str::to_owned);
    reason.unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}
