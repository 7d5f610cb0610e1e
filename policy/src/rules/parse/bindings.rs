//! `[[binding]]` sections: role bindings declared in the policy file.
//!
//! Each binding names a `role`, its `members` (`group:NAME` or `user:EMAIL`) and optional
//! `resources` / `environments` globs. Problems are reported with their lines like the rest of
//! the file; a binding with any error is left out (and the whole policy fails).

use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::super::{BINDING_ROLES, BindingSpec, Glob};
use super::report::{Report, RuleCx, unknown_field};
use super::{Value, approver};

const BINDING_FIELDS: &[&str] = &["role", "members", "resources", "environments"];

/// The `[[binding]]` array.
pub(super) fn bindings(report: &mut Report<'_>, value: &Value<'_>) -> Vec<BindingSpec> {
    let DeValue::Array(items) = value.get_ref() else {
        report.at(
            value.span(),
            None,
            "`binding` must be an array of tables: start each one with `[[binding]]`",
        );
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::Table(table) => out.extend(binding(report, table, item.span(), index)),
            _ => report.at(item.span(), None, "each `binding` must be a table"),
        }
    }
    out
}

fn binding(
    report: &mut Report<'_>,
    table: &DeTable<'_>,
    header: Range<usize>,
    index: usize,
) -> Option<BindingSpec> {
    let mut cx = RuleCx::top(report);
    let (mut role, mut members, mut resources, mut environments) = (None, None, None, None);
    for (key, value) in table {
        let slot = match key.get_ref().as_ref() {
            "role" => &mut role,
            "members" => &mut members,
            "resources" => &mut resources,
            "environments" => &mut environments,
            other => {
                cx.error(key.span(), unknown_field(other, "binding", BINDING_FIELDS));
                continue;
            }
        };
        *slot = Some(value);
    }
    let role = match role {
        Some(value) => cx.string("role", value).and_then(|r| {
            if BINDING_ROLES.contains(&r) {
                Some(r.to_owned())
            } else {
                cx.error(
                    value.span(),
                    format!("unknown role {r:?} (valid: {})", BINDING_ROLES.join(", ")),
                );
                None
            }
        }),
        None => {
            cx.error(
                header.clone(),
                format!("binding #{} has no `role`", index + 1),
            );
            None
        }
    };
    let mut member_list = Vec::new();
    match members {
        Some(value) => {
            for (entry, span) in cx.strings("members", value).unwrap_or_default() {
                if approver(entry).is_some() {
                    member_list.push(entry.to_owned());
                } else {
                    cx.error(
                        span,
                        format!("bad member {entry:?} (expected \"group:NAME\" or \"user:EMAIL\")"),
                    );
                }
            }
        }
        None => cx.error(header, format!("binding #{} has no `members`", index + 1)),
    }
    let resources = globs(&mut cx, "resources", resources);
    let environments = globs(&mut cx, "environments", environments);
    if !cx.is_clean() {
        return None;
    }
    Some(BindingSpec {
        role: role?,
        members: member_list,
        resources,
        environments,
    })
}

/// Optional glob list, checked and kept as text.
fn globs(cx: &mut RuleCx<'_, '_>, field: &str, value: Option<&Value<'_>>) -> Vec<String> {
    let Some(entries) = value.and_then(|v| cx.strings(field, v)) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for (pattern, span) in entries {
        match Glob::new(pattern) {
            Ok(_) => out.push(pattern.to_owned()),
            Err(why) => cx.error(span, format!("bad pattern {pattern:?} in `{field}`: {why}")),
        }
    }
    out
}
