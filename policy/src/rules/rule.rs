//! A compiled guardrail and the test of whether it matches one statement string.
//!
//! The matching contract is documented in the `rules` module header; this file implements it.
//! Cheap session checks run first and the regex last, so most rules are rejected without
//! looking at the statement at all.

use regex::Regex;

use super::glob::{Glob, NamePattern};
use super::{Action, SessionContext};
use crate::facts::{Statement, StatementFacts, StatementKind};

/// One `[[guardrail]]`, validated and compiled.
#[derive(Clone, Debug)]
pub(crate) struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub action: Action,
    /// Shown to the client on deny and review; `None` only for allow rules without a message.
    pub message: Option<String>,
    /// Review only (0 otherwise).
    pub approvals: u32,
    /// Review only: `group:NAME` / `user:EMAIL` entries as written.
    pub approvers: Vec<String>,
    /// Review only: longest an approval may cover the same statement shape; 0 = once only.
    pub max_approval_minutes: u32,
    /// Scope; empty means every resource.
    pub resources: Vec<Glob>,
    /// Scope; empty means every environment.
    pub environments: Vec<Glob>,
    pub when: Conditions,
}

/// The `match` table. Empty lists and `false` flags mean "no condition" (the parser never
/// produces a `Conditions` with none at all).
#[derive(Clone, Debug, Default)]
pub(crate) struct Conditions {
    pub kinds: Vec<StatementKind>,
    pub tables: Vec<NamePattern>,
    pub functions: Vec<NamePattern>,
    /// Statement flags that must all be set.
    pub flags: Vec<Flag>,
    pub multi_statement: bool,
    pub groups: Vec<String>,
    pub except_groups: Vec<String>,
    pub access_levels: Vec<String>,
    pub regex: Option<Regex>,
}

/// A boolean statement fact a rule can require.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flag {
    WithoutWhere,
    ModifyingCte,
    CopyProgram,
    CopyFile,
    ExplainAnalyze,
    SetRole,
    Opaque,
}

impl Flag {
    /// Each flag with its `match` field name.
    pub(crate) const ALL: [(&'static str, Flag); 7] = [
        ("without_where", Flag::WithoutWhere),
        ("modifying_cte", Flag::ModifyingCte),
        ("copy_program", Flag::CopyProgram),
        ("copy_file", Flag::CopyFile),
        ("explain_analyze", Flag::ExplainAnalyze),
        ("set_role", Flag::SetRole),
        ("opaque", Flag::Opaque),
    ];

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
    }

    /// Whether the flag is set on `s`; `analyzed` says `s` is, or is wrapped by, an
    /// `EXPLAIN ANALYZE` (which executes what it wraps).
    fn holds(self, s: &Statement, analyzed: bool) -> bool {
        match self {
            Flag::WithoutWhere => s.without_where,
            Flag::ModifyingCte => s.modifying_cte,
            Flag::CopyProgram => s.copy.is_some_and(|(_, program, _)| program),
            Flag::CopyFile => s.copy.is_some_and(|(_, _, file)| file),
            Flag::ExplainAnalyze => analyzed,
            Flag::SetRole => s.set_role,
            Flag::Opaque => s.opaque,
        }
    }
}

impl Rule {
    /// Whether the rule applies. `facts` has at least one statement and no parse error;
    /// `normalized` caches the normalized text across rules (computed on first use).
    pub(crate) fn matches(
        &self,
        session: &SessionContext<'_>,
        facts: &StatementFacts,
        sql: &str,
        normalized: &mut Option<String>,
    ) -> bool {
        let c = &self.when;
        in_scope(&self.resources, session.resource)
            && in_scope(&self.environments, session.environment)
            && (c.access_levels.is_empty()
                || session
                    .access_level
                    .is_some_and(|level| c.access_levels.iter().any(|l| l == level)))
            && (c.groups.is_empty() || session.groups.iter().any(|g| c.groups.contains(g)))
            && !session.groups.iter().any(|g| c.except_groups.contains(g))
            && (!c.multi_statement || facts.is_multi_statement())
            && (!c.has_statement_conditions()
                || facts.statements.iter().any(|s| {
                    any_statement(s, false, &|s, analyzed| c.statement_matches(s, analyzed))
                }))
            && c.regex
                .as_ref()
                .is_none_or(|re| re.is_match(normalized.get_or_insert_with(|| normalize(sql))))
    }
}

impl Conditions {
    fn has_statement_conditions(&self) -> bool {
        !(self.kinds.is_empty()
            && self.tables.is_empty()
            && self.functions.is_empty()
            && self.flags.is_empty())
    }

    /// Every statement-level condition holds for `s` itself (`analyzed`: see [`Flag::holds`]).
    fn statement_matches(&self, s: &Statement, analyzed: bool) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&s.kind))
            && (self.tables.is_empty()
                || s.tables_read.iter().chain(&s.tables_written).any(|t| {
                    self.tables
                        .iter()
                        .any(|p| p.matches(t.schema.as_deref(), &t.name))
                }))
            && (self.functions.is_empty()
                || s.functions
                    .iter()
                    .any(|f| self.functions.iter().any(|p| p.matches_function(f))))
            && self.flags.iter().all(|flag| flag.holds(s, analyzed))
    }
}

fn in_scope(globs: &[Glob], value: &str) -> bool {
    globs.is_empty() || globs.iter().any(|g| g.matches(value))
}

/// Whether `test` holds for `s` or any statement it wraps or nests, depth first. Like
/// `Statement::walk` without the allocation (the depth is bounded by the classifier), and
/// passing down whether an enclosing statement is an `EXPLAIN ANALYZE`: the statement it wraps
/// is executed, so `kinds = ["delete"], explain_analyze = true` must match
/// `EXPLAIN ANALYZE DELETE ...` although the flag belongs to the `EXPLAIN`.
fn any_statement(s: &Statement, analyzed: bool, test: &dyn Fn(&Statement, bool) -> bool) -> bool {
    let analyzed = analyzed || s.explain_analyze;
    test(s, analyzed)
        || s.inner
            .as_deref()
            .is_some_and(|inner| any_statement(inner, analyzed, test))
        || s.nested.iter().any(|n| any_statement(n, analyzed, test))
}

/// The text `match.regex` sees: lower-cased, every run of whitespace (including newlines)
/// replaced by one space, leading and trailing whitespace removed. Comments and literals are
/// kept as written.
pub(crate) fn normalize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for word in sql.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes_case_and_whitespace() {
        assert_eq!(
            normalize("  SELECT\t*\n\n  FROM  Users -- X\n"),
            "select * from users -- x"
        );
        assert_eq!(normalize(""), "");
    }
}
