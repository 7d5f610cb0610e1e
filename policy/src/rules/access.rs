//! Who may connect at all: standing `[[access]]` allowances and the `[[grant]]` rules that say
//! what time-boxed access may be requested, for how long, and who must approve it.
//!
//! Without a matching allowance or an approved grant, a session is refused: the control plane
//! checks this when a session opens, and the gateway checks allowances again whenever the
//! policy changes, ending sessions whose allowance is gone.
//!
//! ```toml
//! [[access]]                          # standing access, no request needed
//! name = "engineers-staging"          # required, unique among [[access]]
//! members = ["group:eng"]             # required: group:NAME, user:EMAIL, or "*" (anyone signed in)
//! level = "read-write"                # required: the session's access level
//! resources = ["pg-staging*"]         # optional globs; default any
//! environments = ["staging"]          # optional globs; default any
//!
//! [[grant]]                           # what may be requested, and on what terms
//! name = "prod-access"                # required, unique among [[grant]]
//! levels = ["read-only", "read-write"]  # required: levels that may be requested
//! max_duration = "4h"                 # required: longest grant (s, m, h, d)
//! approvals = 2                       # default 1 (1..=10)
//! approvers = ["group:dba", "group:sre"]  # default: the control plane's approver group
//! one_from_each = true                # every named group must contribute an approver
//! decide_within = "24h"               # how long the request stays open; default 24h
//! resources = ["pg-prod"]             # optional globs; default any
//! environments = ["prod"]             # optional globs; default any
//! ```
//!
//! The first matching entry in file order wins, for both. The level `read-only` has a built-in
//! meaning: see [`read_only_violation`]. Other levels mean what guardrails with
//! `access_levels` make them mean.

use std::time::Duration;

use super::Glob;
use crate::facts::{StatementFacts, StatementKind};

/// A `[[access]]` section: standing access at `level` for `members`.
#[derive(Clone, Debug)]
pub struct AccessRule {
    pub name: String,
    /// `group:NAME`, `user:EMAIL` or `*`.
    pub members: Vec<String>,
    pub level: String,
    pub resources: Vec<Glob>,
    pub environments: Vec<Glob>,
}

/// A `[[grant]]` section: the terms on which access may be requested.
#[derive(Clone, Debug)]
pub struct GrantRule {
    pub name: String,
    pub levels: Vec<String>,
    pub max_duration: Duration,
    /// Distinct approvals needed (k).
    pub approvals: u32,
    /// `group:NAME` / `user:EMAIL`; empty: the control plane's default approver group.
    pub approvers: Vec<String>,
    /// Each `group:` entry of `approvers` must be represented by a different approver.
    pub one_from_each: bool,
    /// How long a request waits for its approvals before it expires.
    pub decide_within: Duration,
    pub resources: Vec<Glob>,
    pub environments: Vec<Glob>,
}

/// The level with a built-in meaning: nothing that writes or could turn writing back on.
pub const READ_ONLY: &str = "read-only";

/// Default for `decide_within`.
pub const DEFAULT_DECIDE_WITHIN: Duration = Duration::from_secs(24 * 3600);

fn in_scope(globs: &[Glob], value: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| g.matches(value))
}

/// Whether a member entry names this identity. Emails compare ignoring ASCII case; groups
/// exactly.
pub fn names_member(member: &str, email: &str, groups: &[String]) -> bool {
    if member == "*" {
        return true;
    }
    match member.split_once(':') {
        Some(("group", g)) => groups.iter().any(|x| x == g),
        Some(("user", u)) => u.eq_ignore_ascii_case(email),
        _ => false,
    }
}

impl AccessRule {
    /// Whether this allowance covers `email` (in `groups`) on `resource` in `environment`.
    pub fn covers(
        &self,
        email: &str,
        groups: &[String],
        resource: &str,
        environment: &str,
    ) -> bool {
        in_scope(&self.resources, resource)
            && in_scope(&self.environments, environment)
            && self.members.iter().any(|m| names_member(m, email, groups))
    }
}

impl GrantRule {
    /// Whether this rule lets `level` be requested on `resource` in `environment`.
    pub fn allows(&self, resource: &str, environment: &str, level: &str) -> bool {
        in_scope(&self.resources, resource)
            && in_scope(&self.environments, environment)
            && self.levels.iter().any(|l| l == level)
    }
}

/// Why a statement may not run under the `read-only` level, or `None` if it may.
///
/// Guaranteed: every statement kind that writes, changes schema or permissions, runs code the
/// gateway cannot see (`DO`, `CALL`), changes the role, or could turn a read-only transaction
/// into a read-write one (`SET`/`RESET` of `default_transaction_read_only`,
/// `transaction_read_only`, `SET TRANSACTION`/`SET SESSION CHARACTERISTICS`, `RESET ALL`,
/// `set_config()`, and `BEGIN`/`START TRANSACTION`/`SET TRANSACTION` whose text says
/// `read write`) is refused, wherever it is nested. Statements that could not be analysed are
/// refused.
///
/// Not guaranteed by this check alone: a function called from a `SELECT` can write. The
/// gateway therefore also opens read-only sessions with `default_transaction_read_only = on`,
/// so PostgreSQL itself refuses such writes; this check stops the ways of turning that off.
pub fn read_only_violation(facts: &StatementFacts, sql: &str) -> Option<String> {
    if let Some(err) = &facts.parse_error {
        return Some(format!("the statement could not be parsed ({err})"));
    }
    let read_write = sql
        .to_ascii_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .contains("read write");
    for s in facts.all().iter().flat_map(|s| s.walk()) {
        let kind = s.kind.as_str();
        if !s.tables_written.is_empty() {
            return Some(format!("a {kind} statement that writes"));
        }
        if s.set_role
            || s.opaque
            || s.explain_analyze
                && s.inner
                    .as_ref()
                    .is_some_and(|i| !i.tables_written.is_empty())
        {
            return Some(format!(
                "a {kind} statement that could write or change role"
            ));
        }
        if s.functions.iter().any(|f| f.ends_with("set_config")) {
            return Some("set_config()".to_owned());
        }
        let refused = match s.kind {
            StatementKind::Select
            | StatementKind::Show
            | StatementKind::Explain
            | StatementKind::Listen
            | StatementKind::Cursor
            | StatementKind::Prepare
            | StatementKind::Execute
            | StatementKind::Deallocate => false,
            StatementKind::Transaction => read_write,
            StatementKind::Set => match s.setting.as_deref() {
                None => true,
                Some(
                    "default_transaction_read_only"
                    | "transaction_read_only"
                    | "role"
                    | "session_authorization",
                ) => true,
                Some(_) => read_write,
            },
            StatementKind::Copy => {
                !matches!(s.copy, Some((crate::CopyDirection::To, false, false)))
            }
            _ => true,
        };
        if refused {
            return Some(format!("a {kind} statement"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Policy, SessionContext, classify, decide};

    const POLICY: &str = r#"
[[access]]
name = "eng-staging"
members = ["group:eng"]
level = "read-write"
environments = ["staging"]

[[access]]
name = "anyone-reads-dev"
members = ["*"]
level = "read-only"
resources = ["dev-*"]

[[grant]]
name = "prod"
levels = ["read-only", "read-write"]
max_duration = "4h"
approvals = 2
approvers = ["group:dba", "group:sre"]
one_from_each = true
resources = ["pg-prod"]

[[grant]]
name = "anything-else"
levels = ["read-only"]
max_duration = "30m"
"#;

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn standing_access_matches_members_and_scope_in_file_order() {
        let p = Policy::parse(POLICY).unwrap();
        let eng = groups(&["eng"]);
        let hit = p
            .standing_access("a@x.io", &eng, "pg-staging", "staging")
            .unwrap();
        assert_eq!(
            (hit.name.as_str(), hit.level.as_str()),
            ("eng-staging", "read-write")
        );
        assert!(
            p.standing_access("a@x.io", &eng, "pg-prod", "prod")
                .is_none()
        );
        let anyone = p.standing_access("b@x.io", &[], "dev-1", "prod").unwrap();
        assert_eq!(anyone.level, "read-only");
        assert!(
            p.standing_access("b@x.io", &[], "pg-staging", "staging")
                .is_none()
        );
    }

    #[test]
    fn grant_rules_pick_the_first_allowing_the_level() {
        let p = Policy::parse(POLICY).unwrap();
        let g = p.grant_rule("pg-prod", "prod", "read-write").unwrap();
        assert_eq!(
            (g.name.as_str(), g.approvals, g.one_from_each),
            ("prod", 2, true)
        );
        assert_eq!(g.max_duration, Duration::from_secs(4 * 3600));
        assert_eq!(g.decide_within, DEFAULT_DECIDE_WITHIN);
        assert_eq!(
            p.grant_rule("pg-other", "prod", "read-only").unwrap().name,
            "anything-else"
        );
        assert!(p.grant_rule("pg-other", "prod", "read-write").is_none());
        assert!(p.grant_rule("pg-prod", "prod", "unmask").is_none());
    }

    #[test]
    fn bad_sections_are_reported_with_lines() {
        let bad = r#"
[[access]]
name = "x"
members = ["eng"]
level = "Read Write"
colour = "blue"

[[grant]]
name = "g"
levels = ["read-only"]
max_duration = "forever"
one_from_each = true
approvers = ["group:dba"]

[[grant]]
name = "h"
levels = ["read-only"]

[[grant]]
name = "i"
levels = ["read-only"]
max_duration = "1h"
approvals = 1
approvers = ["group:a", "group:b"]
one_from_each = true
"#;
        let err = Policy::parse(bad).unwrap_err().to_string();
        for needle in [
            "line 4",
            "bad member \"eng\"",
            "invalid access level \"Read Write\"",
            "unknown field",
            "`max_duration`",
            "`one_from_each` needs at least two",
            "has no `max_duration`",
            "needs `approvals` of at least 2",
        ] {
            assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
        }
    }

    fn read_only(sql: &str) -> Option<String> {
        let p = Policy::empty();
        let ctx = SessionContext {
            identity: "a@x.io",
            groups: &[],
            resource: "r",
            environment: "e",
            access_level: Some(READ_ONLY),
        };
        let d = decide(&p, &ctx, &classify(sql), sql);
        (d.action == crate::Action::Deny).then(|| d.rule.unwrap_or_default())
    }

    #[test]
    fn read_only_lets_reads_through_and_stops_every_way_to_write() {
        for ok in [
            "select * from orders where id = 1",
            "show search_path",
            "begin",
            "begin read only",
            "commit",
            "explain select 1",
            "set search_path = public",
            "copy orders to stdout",
            "declare c cursor for select 1",
            "prepare p as select 1",
        ] {
            assert_eq!(read_only(ok), None, "{ok}");
        }
        for bad in [
            "delete from orders where id = 1",
            "insert into t values (1)",
            "update t set a = 1",
            "with d as (delete from t returning *) select * from d",
            "create table t (a int)",
            "drop table t",
            "truncate t",
            "grant select on t to bob",
            "copy t from stdin",
            "copy t to '/tmp/x'",
            "do $$ begin delete from t; end $$",
            "call p()",
            "set default_transaction_read_only = off",
            "set session characteristics as transaction read write",
            "set transaction read write",
            "begin read write",
            "start transaction read write",
            "reset all",
            "set role postgres",
            "select set_config('default_transaction_read_only', 'off', false)",
            "explain analyze delete from t",
            "prepare p as delete from t",
            "vacuum t",
            "select 1; delete from t",
            "selec 1",
        ] {
            assert_eq!(
                read_only(bad).as_deref(),
                Some(crate::READ_ONLY_RULE),
                "{bad}"
            );
        }
    }
}
