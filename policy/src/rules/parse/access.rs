//! `[[access]]` and `[[grant]]` sections (see `rules::access` for their meaning). Problems are
//! reported with their lines like the rest of the file; a section with any error is left out
//! (and the whole policy fails).

use std::collections::HashSet;
use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::super::access::{AccessRule, DEFAULT_DECIDE_WITHIN, GrantRule};
use super::report::{Report, RuleCx, unknown_field};
use super::{APPROVALS, Value, approver};

const ACCESS_FIELDS: &[&str] = &["name", "members", "level", "resources", "environments"];
const GRANT_FIELDS: &[&str] = &[
    "name",
    "levels",
    "max_duration",
    "approvals",
    "approvers",
    "one_from_each",
    "decide_within",
    "resources",
    "environments",
];

/// Longest grant and longest wait for a decision: 30 days.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The tables of an array-of-tables section, each with its header span.
pub(super) fn tables<'a, 'i>(
    report: &mut Report<'_>,
    value: &'a Value<'i>,
    section: &str,
) -> Vec<(&'a DeTable<'i>, Range<usize>)> {
    let DeValue::Array(items) = value.get_ref() else {
        report.at(
            value.span(),
            None,
            format!("`{section}` must be an array of tables: start each one with `[[{section}]]`"),
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item.get_ref() {
            DeValue::Table(table) => out.push((table, item.span())),
            _ => report.at(
                item.span(),
                None,
                format!("each `{section}` must be a table"),
            ),
        }
    }
    out
}

/// Collects a section's fields by name; unknown ones are reported.
pub(super) fn fields<'a, 'i>(
    cx: &mut RuleCx<'_, '_>,
    table: &'a DeTable<'i>,
    section: &str,
    valid: &[&'static str],
) -> Vec<(&'static str, &'a Value<'i>)> {
    let mut out = Vec::new();
    for (key, value) in table {
        match valid.iter().find(|f| **f == key.get_ref().as_ref()) {
            Some(field) => out.push((*field, value)),
            None => cx.error(key.span(), unknown_field(key.get_ref(), section, valid)),
        }
    }
    out
}

pub(super) fn field<'a, 'i>(found: &[(&str, &'a Value<'i>)], name: &str) -> Option<&'a Value<'i>> {
    found.iter().find(|(f, _)| *f == name).map(|(_, v)| *v)
}

/// The section's `name`: present, well-formed and unique within the section.
pub(super) fn section_name(
    cx: &mut RuleCx<'_, '_>,
    value: Option<&Value<'_>>,
    header: Range<usize>,
    section: &str,
    index: usize,
    seen: &mut HashSet<String>,
) -> Option<String> {
    let Some(value) = value else {
        cx.error(header, format!("{section} #{} has no `name`", index + 1));
        return None;
    };
    let name = cx.string("name", value)?;
    if !super::valid_name(name) {
        cx.error(
            value.span(),
            format!(
                "invalid name {name:?}: use 1 to {} of a-z, 0-9, '.', '_', '-'",
                super::MAX_NAME_LEN
            ),
        );
        return None;
    }
    if !seen.insert(name.to_owned()) {
        cx.error(value.span(), format!("duplicate {section} name {name:?}"));
        return None;
    }
    Some(name.to_owned())
}

/// An access level name: like a rule name.
pub(super) fn level(cx: &mut RuleCx<'_, '_>, text: &str, span: Range<usize>) -> Option<String> {
    if super::valid_name(text) {
        Some(text.to_owned())
    } else {
        cx.error(
            span,
            format!("invalid access level {text:?}: use a-z, 0-9, '.', '_', '-'"),
        );
        None
    }
}

/// A duration such as `"30m"` or `"4h"`, from 1 s up to 30 days.
fn duration(cx: &mut RuleCx<'_, '_>, field: &str, value: &Value<'_>) -> Option<Duration> {
    let text = cx.string(field, value)?;
    match countersign_common::parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(1) && d <= MAX_DURATION => Some(d),
        Ok(_) => {
            cx.error(
                value.span(),
                format!("`{field}` must be between 1s and 30d, not {text:?}"),
            );
            None
        }
        Err(why) => {
            cx.error(value.span(), format!("`{field}`: {why}"));
            None
        }
    }
}

/// The `[[access]]` array.
pub(super) fn access(report: &mut Report<'_>, value: &Value<'_>) -> Vec<AccessRule> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, (table, header)) in tables(report, value, "access").into_iter().enumerate() {
        let mut cx = RuleCx::top(report);
        let found = fields(&mut cx, table, "access", ACCESS_FIELDS);
        let name = section_name(
            &mut cx,
            field(&found, "name"),
            header.clone(),
            "access",
            index,
            &mut seen,
        );
        let mut members = Vec::new();
        match field(&found, "members") {
            Some(v) => {
                for (entry, span) in cx.strings("members", v).unwrap_or_default() {
                    if entry == "*" || approver(entry).is_some() {
                        members.push(entry.to_owned());
                    } else {
                        cx.error(
                            span,
                            format!(
                                "bad member {entry:?} (expected \"group:NAME\", \"user:EMAIL\" or \"*\")"
                            ),
                        );
                    }
                }
            }
            None => cx.error(
                header.clone(),
                format!("access #{} has no `members`", index + 1),
            ),
        }
        let level_name = match field(&found, "level") {
            Some(v) => cx
                .string("level", v)
                .and_then(|t| level(&mut cx, t, v.span())),
            None => {
                cx.error(header, format!("access #{} has no `level`", index + 1));
                None
            }
        };
        let resources = cx.globs("resources", field(&found, "resources"));
        let environments = cx.globs("environments", field(&found, "environments"));
        if !cx.is_clean() {
            continue;
        }
        if let (Some(name), Some(level)) = (name, level_name) {
            out.push(AccessRule {
                name,
                members,
                level,
                resources,
                environments,
            });
        }
    }
    out
}

/// The `[[grant]]` array.
pub(super) fn grants(report: &mut Report<'_>, value: &Value<'_>) -> Vec<GrantRule> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, (table, header)) in tables(report, value, "grant").into_iter().enumerate() {
        let mut cx = RuleCx::top(report);
        let found = fields(&mut cx, table, "grant", GRANT_FIELDS);
        let name = section_name(
            &mut cx,
            field(&found, "name"),
            header.clone(),
            "grant",
            index,
            &mut seen,
        );
        let mut levels = Vec::new();
        match field(&found, "levels") {
            Some(v) => {
                for (entry, span) in cx.strings("levels", v).unwrap_or_default() {
                    levels.extend(level(&mut cx, entry, span));
                }
            }
            None => cx.error(
                header.clone(),
                format!("grant #{} has no `levels`", index + 1),
            ),
        }
        let max_duration = match field(&found, "max_duration") {
            Some(v) => duration(&mut cx, "max_duration", v),
            None => {
                cx.error(
                    header.clone(),
                    format!(
                        "grant #{} has no `max_duration` (the longest grant, e.g. \"4h\")",
                        index + 1
                    ),
                );
                None
            }
        };
        let decide_within = match field(&found, "decide_within") {
            Some(v) => duration(&mut cx, "decide_within", v),
            None => Some(DEFAULT_DECIDE_WITHIN),
        };
        let approvals = match field(&found, "approvals") {
            Some(v) => cx.integer("approvals", v).and_then(|n| {
                if APPROVALS.contains(&n) {
                    u32::try_from(n).ok()
                } else {
                    cx.error(
                        v.span(),
                        format!(
                            "`approvals` must be between {} and {}, not {n}",
                            APPROVALS.start(),
                            APPROVALS.end()
                        ),
                    );
                    None
                }
            }),
            None => Some(1),
        };
        let mut approvers = Vec::new();
        if let Some(v) = field(&found, "approvers") {
            for (entry, span) in cx.strings("approvers", v).unwrap_or_default() {
                if approver(entry).is_some() {
                    approvers.push(entry.to_owned());
                } else {
                    cx.error(
                        span,
                        format!(
                            "bad approver {entry:?} (expected \"group:NAME\" or \"user:EMAIL\")"
                        ),
                    );
                }
            }
        }
        let one_from_each =
            field(&found, "one_from_each").is_some_and(|v| cx.flag("one_from_each", v));
        let groups = approvers.iter().filter(|a| a.starts_with("group:")).count();
        if one_from_each {
            if groups < 2 {
                cx.error(
                    header.clone(),
                    "`one_from_each` needs at least two `group:` entries in `approvers`",
                );
            } else if let Some(k) = approvals
                && usize::try_from(k).is_ok_and(|k| k < groups)
            {
                cx.error(
                    header.clone(),
                    format!(
                        "`one_from_each` with {groups} approver groups needs `approvals` of at least {groups}, not {k}"
                    ),
                );
            }
        }
        let resources = cx.globs("resources", field(&found, "resources"));
        let environments = cx.globs("environments", field(&found, "environments"));
        if !cx.is_clean() {
            continue;
        }
        if let (Some(name), Some(max_duration), Some(decide_within), Some(approvals)) =
            (name, max_duration, decide_within, approvals)
        {
            out.push(GrantRule {
                name,
                levels,
                max_duration,
                approvals,
                approvers,
                one_from_each,
                decide_within,
                resources,
                environments,
            });
        }
    }
    out
}
