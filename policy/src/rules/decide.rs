//! [`decide`]: a compiled policy applied to one statement string. The precedence it implements
//! is documented in the `rules` module header.

use super::access::{READ_ONLY, read_only_violation};
use super::rule::Rule;
use super::{Action, Decision, Policy, SessionContext};
use crate::facts::StatementFacts;

/// The rule name reported when a session with `read-only` access sent something that could
/// write (see [`read_only_violation`]).
pub const READ_ONLY_RULE: &str = "read-only-access";

/// The rule name reported when `on_parse_error` decided.
pub const ON_PARSE_ERROR: &str = "on_parse_error";

/// Decides what happens to `sql`, whose facts are `facts`, for `session`.
///
/// A session at the `read-only` access level is first checked by [`read_only_violation`]:
/// anything that could write is denied as rule [`READ_ONLY_RULE`] before any policy rule.
///
/// Pure: no I/O, no clock, no global state. Allocates nothing beyond the returned
/// [`Decision`] unless a rule matches (names go into `matched`) or a rule with a `regex`
/// gets as far as testing it (the normalized text, built once per call). `sql` is used only for
/// `match.regex`; every other condition looks at `facts`, which must have been classified from
/// this same `sql`.
pub fn decide(
    policy: &Policy,
    session: &SessionContext<'_>,
    facts: &StatementFacts,
    sql: &str,
) -> Decision {
    if session.access_level == Some(READ_ONLY)
        && let Some(what) = read_only_violation(facts, sql)
    {
        return Decision::built_in_deny(
            READ_ONLY_RULE,
            &format!("{what} is not allowed with read-only access; request a read-write grant"),
        );
    }
    if let Some(err) = &facts.parse_error {
        return parse_failure(policy.on_parse_error, err);
    }
    if facts.statements.is_empty() {
        return Decision::allow_by_default();
    }

    let mut normalized = None;
    let mut matched = Vec::new();
    let (mut deny, mut allow, mut review): (Option<&Rule>, Option<&Rule>, Option<&Rule>) =
        (None, None, None);
    for rule in &policy.rules {
        if !rule.matches(session, facts, sql, &mut normalized) {
            continue;
        }
        matched.push(rule.name.clone());
        let first = match rule.action {
            Action::Deny => &mut deny,
            Action::Allow => &mut allow,
            Action::Review => &mut review,
        };
        first.get_or_insert(rule);
    }

    match deny.or(allow).or(review) {
        Some(rule) => Decision {
            action: rule.action,
            rule: Some(rule.name.clone()),
            message: rule.message.clone(),
            approvals: rule.approvals,
            approvers: rule.approvers.clone(),
            max_approval_minutes: rule.max_approval_minutes,
            matched,
        },
        None => Decision::allow_by_default(),
    }
}

/// The statement could not be classified: `on_parse_error` decides, and no rule is consulted
/// (no rule can be evaluated against facts that do not exist).
fn parse_failure(action: Action, err: &str) -> Decision {
    let (message, approvals) = match action {
        Action::Allow => (None, 0),
        Action::Deny => (Some(format!("statement could not be parsed: {err}")), 0),
        Action::Review => (Some(format!("statement could not be parsed: {err}")), 1),
    };
    Decision {
        action,
        rule: Some(ON_PARSE_ERROR.to_owned()),
        message,
        approvals,
        approvers: Vec::new(),
        max_approval_minutes: 0,
        matched: Vec::new(),
    }
}

impl Decision {
    /// Allow, with no rule: what a statement that matches nothing gets.
    pub fn allow_by_default() -> Self {
        Self {
            action: Action::Allow,
            rule: None,
            message: None,
            approvals: 0,
            approvers: Vec::new(),
            max_approval_minutes: 0,
            matched: Vec::new(),
        }
    }

    /// A deny made by the caller outside any policy rule (a built-in check),
    /// named `rule` so that audit and the client can tell it apart.
    pub fn built_in_deny(rule: &str, message: &str) -> Self {
        Self {
            action: Action::Deny,
            rule: Some(rule.to_owned()),
            message: Some(message.to_owned()),
            ..Self::allow_by_default()
        }
    }
}
