//! Policy file → compiled [`Policy`], with every problem reported at once.
//!
//! The file is read into `toml`'s spanned document tree ([`DeTable`]) and walked by hand rather
//! than deserialized with serde: serde stops at the first error, and a policy author fixing a
//! file one error per save is the failure this avoids. The walk still refuses unknown fields
//! everywhere, as `deny_unknown_fields` would. Field-level problems point at the field's line;
//! rule-level ones at the rule's `name` or `[[guardrail]]` header. Conditions are compiled in
//! `conditions`.

mod access;
mod bindings;
mod conditions;
mod mask;
mod report;

use std::collections::HashMap;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::rule::Rule;
use super::{Action, Policy, PolicyErrors};
use conditions::conditions;
use report::{Report, RuleCx, unknown_field};

type Value<'i> = Spanned<DeValue<'i>>;

const TOP_FIELDS: &[&str] = &[
    "on_parse_error",
    "guardrail",
    "binding",
    "access",
    "grant",
    "mask",
];
const RULE_FIELDS: &[&str] = &[
    "name",
    "description",
    "match",
    "action",
    "message",
    "resources",
    "environments",
    "approvals",
    "approvers",
    "max_approval_minutes",
];

/// Longest rule name.
const MAX_NAME_LEN: usize = 63;
/// `approvals` range for review rules.
const APPROVALS: std::ops::RangeInclusive<i64> = 1..=10;
/// `max_approval_minutes` range for review rules (a day at most).
const APPROVAL_MINUTES: std::ops::RangeInclusive<i64> = 1..=1440;
/// Message for deny and review rules that set none.
const DEFAULT_MESSAGE: &str = "blocked by policy";

pub(crate) fn parse(text: &str) -> Result<Policy, PolicyErrors> {
    let mut report = Report::new(text);
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(err) => {
            report.toml_syntax(&err);
            return Err(report.finish());
        }
    };
    let mut policy = Policy::empty();
    for (key, value) in doc.get_ref() {
        match key.get_ref().as_ref() {
            "on_parse_error" => {
                let mut cx = RuleCx::top(&mut report);
                if let Some(action) = action(&mut cx, "on_parse_error", value) {
                    policy.on_parse_error = action;
                }
            }
            "guardrail" => policy.rules = guardrails(&mut report, value),
            "binding" => policy.bindings = bindings::bindings(&mut report, value),
            "access" => policy.access = access::access(&mut report, value),
            "grant" => policy.grants = access::grants(&mut report, value),
            "mask" => policy.masks = mask::masks(&mut report, value),
            other => report.at(key.span(), None, unknown_field(other, "", TOP_FIELDS)),
        }
    }
    if report.is_clean() {
        Ok(policy)
    } else {
        Err(report.finish())
    }
}

/// The `[[guardrail]]` array. Rules with errors are reported and left out.
fn guardrails(report: &mut Report<'_>, value: &Value<'_>) -> Vec<Rule> {
    let DeValue::Array(items) = value.get_ref() else {
        report.at(
            value.span(),
            None,
            "`guardrail` must be an array of tables: start each rule with `[[guardrail]]`",
        );
        return Vec::new();
    };
    let mut seen = HashMap::new();
    let mut rules = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match item.get_ref() {
            DeValue::Table(table) => {
                rules.extend(rule(report, table, item.span(), index, &mut seen));
            }
            _ => report.at(item.span(), None, "each `guardrail` must be a table"),
        }
    }
    rules
}

/// The fields of one rule, as found.
#[derive(Default)]
struct RawRule<'a, 'i> {
    name: Option<&'a Value<'i>>,
    description: Option<&'a Value<'i>>,
    conditions: Option<&'a Value<'i>>,
    action: Option<&'a Value<'i>>,
    message: Option<&'a Value<'i>>,
    resources: Option<&'a Value<'i>>,
    environments: Option<&'a Value<'i>>,
    approvals: Option<&'a Value<'i>>,
    approvers: Option<&'a Value<'i>>,
    max_approval_minutes: Option<&'a Value<'i>>,
}

/// One rule. `header` is the span of its `[[guardrail]]` header; `seen` maps names to the
/// line that first defined them.
fn rule(
    report: &mut Report<'_>,
    table: &DeTable<'_>,
    header: Range<usize>,
    index: usize,
    seen: &mut HashMap<String, usize>,
) -> Option<Rule> {
    let mut raw = RawRule::default();
    let mut unknown = Vec::new();
    for (key, value) in table {
        let slot = match key.get_ref().as_ref() {
            "name" => &mut raw.name,
            "description" => &mut raw.description,
            "match" => &mut raw.conditions,
            "action" => &mut raw.action,
            "message" => &mut raw.message,
            "resources" => &mut raw.resources,
            "environments" => &mut raw.environments,
            "approvals" => &mut raw.approvals,
            "approvers" => &mut raw.approvers,
            "max_approval_minutes" => &mut raw.max_approval_minutes,
            _ => {
                unknown.push(key);
                continue;
            }
        };
        *slot = Some(value);
    }

    let label = raw.name.and_then(|v| v.get_ref().as_str());
    let mut cx = RuleCx::new(report, label);
    for key in unknown {
        let mut message = unknown_field(key.get_ref(), "", RULE_FIELDS);
        if TOP_FIELDS.contains(&key.get_ref().as_ref()) {
            // TOML puts every key after a `[[guardrail]]` header into that rule.
            message.push_str("; top-level settings must come before the first [[guardrail]]");
        }
        cx.error(key.span(), message);
    }

    let name = match raw.name {
        Some(value) => rule_name(&mut cx, value, seen),
        None => {
            cx.error(
                header.clone(),
                format!("guardrail #{} has no `name`", index + 1),
            );
            None
        }
    };
    let action = match raw.action {
        Some(value) => action(&mut cx, "action", value),
        None => {
            cx.error(
                header.clone(),
                "missing `action` (one of: deny, review, allow)",
            );
            None
        }
    };
    let when = match raw.conditions {
        Some(value) => conditions(&mut cx, value),
        None => {
            cx.error(
                header,
                "missing `match`: give at least one condition, e.g. match = { kinds = [\"drop\"] }",
            );
            None
        }
    };
    let description = raw
        .description
        .and_then(|v| cx.string("description", v))
        .map(str::to_owned);
    let message = raw.message.and_then(|v| {
        let text = cx.string("message", v)?;
        if text.trim().is_empty() {
            cx.error(v.span(), "`message` is empty; leave it out for the default");
            return None;
        }
        Some(text.to_owned())
    });
    let resources = cx.globs("resources", raw.resources);
    let environments = cx.globs("environments", raw.environments);
    let (approvals, approvers) = review(&mut cx, action, raw.approvals, raw.approvers);
    let max_approval_minutes = approval_minutes(&mut cx, action, raw.max_approval_minutes);

    if !cx.is_clean() {
        return None;
    }
    let action = action?;
    let message = match action {
        Action::Allow => message,
        Action::Deny | Action::Review => message.or_else(|| Some(DEFAULT_MESSAGE.to_owned())),
    };
    Some(Rule {
        name: name?,
        description,
        action,
        message,
        approvals,
        approvers,
        max_approval_minutes,
        resources,
        environments,
        when: when?,
    })
}

/// Rule, section and access-level names: 1 to [`MAX_NAME_LEN`] of `a-z0-9._-`.
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// Checks the rule name's syntax and uniqueness.
fn rule_name(
    cx: &mut RuleCx<'_, '_>,
    value: &Value<'_>,
    seen: &mut HashMap<String, usize>,
) -> Option<String> {
    let name = cx.string("name", value)?;
    if !valid_name(name) {
        cx.error(
            value.span(),
            format!(
                "invalid rule name {name:?}: use 1 to {MAX_NAME_LEN} of a-z, 0-9, '.', '_', '-'"
            ),
        );
        return None;
    }
    let line = cx.line_of(value.span());
    if let Some(first) = seen.get(name) {
        cx.error(
            value.span(),
            format!("duplicate rule name (first defined on line {first})"),
        );
        return None;
    }
    seen.insert(name.to_owned(), line);
    Some(name.to_owned())
}

/// `deny`, `review` or `allow`.
fn action(cx: &mut RuleCx<'_, '_>, field: &str, value: &Value<'_>) -> Option<Action> {
    let text = cx.string(field, value)?;
    let action = Action::from_name(text);
    if action.is_none() {
        cx.error(
            value.span(),
            format!("unknown action {text:?} (valid: deny, review, allow)"),
        );
    }
    action
}

/// `approvals` and `approvers`: defaults for review rules, errors on any other rule.
fn review(
    cx: &mut RuleCx<'_, '_>,
    action: Option<Action>,
    approvals: Option<&Value<'_>>,
    approvers: Option<&Value<'_>>,
) -> (u32, Vec<String>) {
    if action.is_some_and(|a| a != Action::Review) {
        for (field, value) in [("approvals", approvals), ("approvers", approvers)] {
            if let Some(value) = value {
                cx.error(
                    value.span(),
                    format!("`{field}` only applies to rules with action = \"review\""),
                );
            }
        }
        return (0, Vec::new());
    }

    let count = approvals.and_then(|value| {
        let n = cx.integer("approvals", value)?;
        if !APPROVALS.contains(&n) {
            cx.error(
                value.span(),
                format!(
                    "`approvals` must be between {} and {}, not {n}",
                    APPROVALS.start(),
                    APPROVALS.end()
                ),
            );
            return None;
        }
        u32::try_from(n).ok()
    });
    let mut entries = Vec::new();
    let mut users = 0;
    for (entry, span) in approvers
        .and_then(|v| cx.strings("approvers", v))
        .unwrap_or_default()
    {
        match approver(entry) {
            Some(is_user) => {
                users += usize::from(is_user);
                entries.push(entry.to_owned());
            }
            None => cx.error(
                span,
                format!("bad approver {entry:?} (expected \"group:NAME\" or \"user:EMAIL\")"),
            ),
        }
    }
    let count = count.unwrap_or(1);
    if let Some(value) = approvals
        && !entries.is_empty()
        && users == entries.len()
        && usize::try_from(count).is_ok_and(|c| c > users)
    {
        cx.error(
            value.span(),
            format!("`approvals` = {count} but only {users} user approver(s) are listed"),
        );
    }
    (count, entries)
}

/// `max_approval_minutes`: how long an approver may let an approval cover the same statement
/// shape. Review rules only; 0 (left out) means an approval covers one execution.
fn approval_minutes(
    cx: &mut RuleCx<'_, '_>,
    action: Option<Action>,
    value: Option<&Value<'_>>,
) -> u32 {
    let Some(value) = value else {
        return 0;
    };
    if action.is_some_and(|a| a != Action::Review) {
        cx.error(
            value.span(),
            "`max_approval_minutes` only applies to rules with action = \"review\"",
        );
        return 0;
    }
    let Some(n) = cx.integer("max_approval_minutes", value) else {
        return 0;
    };
    if !APPROVAL_MINUTES.contains(&n) {
        cx.error(
            value.span(),
            format!(
                "`max_approval_minutes` must be between {} and {}, not {n}",
                APPROVAL_MINUTES.start(),
                APPROVAL_MINUTES.end()
            ),
        );
        return 0;
    }
    u32::try_from(n).unwrap_or(0)
}

/// Checks `group:NAME` / `user:EMAIL` syntax; `Some(true)` for a user entry.
pub(super) fn approver(entry: &str) -> Option<bool> {
    let (kind, who) = entry.split_once(':')?;
    if who.is_empty() || who.chars().any(char::is_whitespace) {
        return None;
    }
    match kind {
        "group" => Some(false),
        "user" => {
            let (local, domain) = who.split_once('@')?;
            (!local.is_empty() && !domain.is_empty() && !domain.contains('@')).then_some(true)
        }
        _ => None,
    }
}
