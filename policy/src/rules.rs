//! Guardrails: the policy file language and the pure decision function.
//!
//! A policy is a TOML file of `[[guardrail]]` rules. [`Policy::parse`] validates and compiles
//! it, reporting every problem at once with its line; [`decide`] applies the compiled policy to
//! one statement string's [`StatementFacts`](crate::StatementFacts) for one session and returns a [`Decision`]. Nothing
//! here does I/O.
//!
//! Layout: `parse` (TOML → compiled rules; all validation, every error at once), `rule` (the
//! compiled rule and whether it matches), `glob` (name patterns), `decide` (precedence),
//! `error` ([`PolicyErrors`]).
//!
//! # File format
//!
//! ```toml
//! # deny | review | allow; default deny. Decides statements pg_query cannot parse.
//! on_parse_error = "deny"
//!
//! [[guardrail]]
//! name = "no-destructive-ddl"      # required, unique, [a-z0-9._-]{1,63}
//! description = "..."               # optional, for people
//! match = { kinds = ["drop", "truncate"] }   # required, at least one condition
//! action = "deny"                   # required: deny | review | allow
//! message = "request a grant"       # optional; default "blocked by policy" (deny, review)
//! resources = ["pg-prod*"]          # optional scope: resource-name globs
//! environments = ["prod"]           # optional scope: environment globs
//! approvals = 1                     # review only: 1..=10, default 1
//! approvers = ["group:dba"]         # review only: "group:NAME" or "user:EMAIL"
//! max_approval_minutes = 30         # review only: 1..=1440; default 0 (approve once only)
//! ```
//!
//! Unknown fields are errors everywhere, as are empty lists and empty strings in lists. A
//! boolean condition can only be `true`: `without_where = false` is an error, because "no
//! condition" is spelled by leaving the field out and a rule must not look stricter than it is.
//!
//! # When a rule matches
//!
//! All of a rule's conditions must hold (AND); within one list, any entry will do (OR).
//! Globs (`resources`, `environments`, `tables`, `functions`) know only `*` and `?` and ignore
//! ASCII case. An empty `resources`/`environments` list cannot be written; leaving one out means
//! every resource/environment.
//!
//! Session conditions:
//! - `resources`, `environments`: the session's resource / environment name matches a glob.
//! - `groups`: the session is in at least one of these groups. `except_groups`: in none of
//!   them. `access_levels`: the session's access level (e.g. `read-only`, `read-write`) is one
//!   of these; a session without an access level never matches a rule that names some. Group
//!   and access-level names compare exactly, case included.
//!
//! Statement conditions — `kinds`, `tables`, `functions`, `without_where`, `modifying_cte`,
//! `copy_program`, `copy_file`, `explain_analyze`, `set_role`, `opaque` — must all hold for
//! **one and the same statement**, which may be any statement of the input: a top-level one or
//! one it wraps or nests (`EXPLAIN`'s and `PREPARE`'s statement, a data-modifying CTE, a
//! statement inside a `DO` block; see `facts`). So `kinds = ["delete"]` matches `EXPLAIN
//! ANALYZE DELETE ...` (and plain `EXPLAIN DELETE ...`, which does not run it: fail closed),
//! `WITH d AS (DELETE ...) SELECT ...`, and a `DO` block containing a `DELETE`. Because the
//! classifier folds what a statement wraps and nests into its own tables, functions and flags,
//! those conditions also hold for the outer statement: `kinds = ["select"], without_where =
//! true` matches `WITH d AS (DELETE FROM t) SELECT ...`. Only the kind is the statement's own.
//! The other way round, `explain_analyze` is set on the `EXPLAIN` but also holds for the
//! statement it wraps (and executes): `kinds = ["delete"], explain_analyze = true` matches
//! `EXPLAIN ANALYZE DELETE ...`.
//! - `kinds`: the statement's kind ([`crate::StatementKind`] names).
//! - `tables`: a table it reads or writes matches a pattern. `name` matches that name in any
//!   schema; `schema.name` matches qualified references in that schema, and unqualified ones
//!   as the default `search_path` would resolve them: as `pg_catalog.name` or `public.name`
//!   (either matching is enough).
//! - `functions`: a function it calls matches a pattern, with the same rules (`pg_read_file`
//!   and `pg_catalog.pg_read_file` both match a call to `pg_read_file(...)` and to
//!   `pg_catalog.pg_read_file(...)`).
//! - `without_where`: an `UPDATE` or `DELETE` without `WHERE`. `modifying_cte`: a `WITH` holding
//!   `INSERT`/`UPDATE`/`DELETE`/`MERGE`. `copy_program`: `COPY ... PROGRAM`. `copy_file`: `COPY`
//!   to or from a file on the database server. `explain_analyze`: `EXPLAIN ANALYZE`.
//!   `set_role`: may change the session's role (`SET ROLE`, `SET SESSION AUTHORIZATION`,
//!   `RESET ALL`, `set_config('role', ...)`, ...). `opaque`: part of it could not be analysed
//!   (dynamic SQL or a non-PL/pgSQL body in a `DO` block).
//!
//! Whole-input conditions:
//! - `multi_statement`: the input holds more than one top-level statement.
//! - `regex`: a regular expression (Rust `regex` syntax, unanchored, case-insensitive) found in
//!   the *normalized* input: the whole string, lower-cased, every run of whitespace replaced by
//!   one space, trimmed. Comments and literals are kept as written. A last resort: text is easy
//!   to disguise, facts are not.
//!
//! A rule without statement conditions matches any non-empty input its other conditions allow.
//!
//! # Precedence
//!
//! 1. The input could not be parsed: the `on_parse_error` action decides, reported as rule
//!    `"on_parse_error"`; no rule is consulted and `matched` is empty.
//! 2. The input holds no statement (empty, or only comments): allow, rule `None`.
//! 3. Otherwise every rule is tested, in file order, and every match is listed in
//!    `matched`. Then: any matching `deny` wins, named by the first in file order; else any
//!    matching `allow` wins (an allow carves an exception out of review rules, never out of a
//!    deny); else the first matching `review` decides; else allow, rule `None`.
//!
//! One decision covers the whole input: if any statement of a multi-statement string is
//! denied, the whole string is.
//!
//! # Not guaranteed
//!
//! Rules see statement facts, which are syntactic (see `facts`): a view, trigger, rule or
//! function can do what no statement names, and names are resolved assuming the default
//! `search_path` (a schema named after the user, or a changed `search_path`, can make an
//! unqualified name mean another table than the one a qualified pattern names). Treat
//! `functions` as capabilities and deny by function where the kind alone is not enough. The
//! `regex` sees text, not meaning.

mod access;
mod decide;
mod error;
mod glob;
mod parse;
mod rule;

use serde::{Deserialize, Serialize};

pub use access::{
    AccessRule, DEFAULT_DECIDE_WITHIN, GrantRule, READ_ONLY, names_member, read_only_violation,
};
pub use decide::{ON_PARSE_ERROR, READ_ONLY_RULE, decide};
pub use error::{PolicyError, PolicyErrors};
pub use glob::Glob;

use rule::Rule;

/// What happens to a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    /// Held until enough approvers agree.
    Review,
    Deny,
}

impl Action {
    /// `"allow"`, `"review"` or `"deny"`, as policy files and audit records spell it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Review => "review",
            Action::Deny => "deny",
        }
    }

    /// Parses `as_str`'s spelling (exactly; policy files are lower-case).
    pub fn from_name(name: &str) -> Option<Self> {
        [Action::Allow, Action::Review, Action::Deny]
            .into_iter()
            .find(|a| a.as_str() == name)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated, compiled policy: kinds resolved, globs parsed, regexes compiled.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    on_parse_error: Action,
    bindings: Vec<BindingSpec>,
    access: Vec<AccessRule>,
    grants: Vec<GrantRule>,
    masks: Vec<crate::mask::MaskRule>,
}

/// The roles a `[[binding]]` may grant.
pub const BINDING_ROLES: &[&str] = &["requester", "approver", "admin", "auditor"];

/// A `[[binding]]` section: `members` hold `role` on the resources and environments matching
/// the globs (an empty list means any). Validated, but kept as text: the control plane stores
/// and matches bindings itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingSpec {
    /// One of [`BINDING_ROLES`].
    pub role: String,
    /// `group:NAME` or `user:EMAIL`; never empty.
    pub members: Vec<String>,
    /// Resource globs (`*`, `?`); empty means any resource.
    pub resources: Vec<String>,
    /// Environment globs; empty means any environment.
    pub environments: Vec<String>,
}

impl Policy {
    /// Parses and compiles a policy file. On failure, every problem found, in file order.
    pub fn parse(text: &str) -> Result<Policy, PolicyErrors> {
        parse::parse(text)
    }

    /// The empty policy: no rules, `on_parse_error = deny`.
    pub fn empty() -> Policy {
        Policy {
            rules: Vec::new(),
            on_parse_error: Action::Deny,
            bindings: Vec::new(),
            access: Vec::new(),
            grants: Vec::new(),
            masks: Vec::new(),
        }
    }

    /// Rule names, in file order.
    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }

    /// The `[[binding]]` sections, in file order.
    pub fn bindings(&self) -> &[BindingSpec] {
        &self.bindings
    }

    /// The `[[access]]` sections, in file order.
    pub fn access_rules(&self) -> &[AccessRule] {
        &self.access
    }

    /// The `[[grant]]` sections, in file order.
    pub fn grant_rules(&self) -> &[GrantRule] {
        &self.grants
    }

    /// The first `[[access]]` allowance covering `email` (in `groups`) on `resource` in
    /// `environment`: standing access without a grant.
    pub fn standing_access(
        &self,
        email: &str,
        groups: &[String],
        resource: &str,
        environment: &str,
    ) -> Option<&AccessRule> {
        self.access
            .iter()
            .find(|a| a.covers(email, groups, resource, environment))
    }

    /// The first `[[grant]]` rule that lets `level` be requested on `resource` in
    /// `environment`.
    pub fn grant_rule(&self, resource: &str, environment: &str, level: &str) -> Option<&GrantRule> {
        self.grants
            .iter()
            .find(|g| g.allows(resource, environment, level))
    }

    /// The `[[mask]]` sections, in file order.
    pub fn mask_rules(&self) -> &[crate::mask::MaskRule] {
        &self.masks
    }

    /// The mask rules that apply to a session on `resource` in `environment` at `level`.
    pub fn masking(
        &self,
        resource: &str,
        environment: &str,
        level: Option<&str>,
    ) -> crate::mask::Masking {
        crate::mask::Masking {
            rules: self
                .masks
                .iter()
                .filter(|m| m.applies(resource, environment, level))
                .cloned()
                .collect(),
        }
    }

    /// What happens to statements that cannot be parsed.
    pub fn on_parse_error(&self) -> Action {
        self.on_parse_error
    }

    /// The `description` of rule `name`, if the rule exists and has one.
    pub fn description(&self, name: &str) -> Option<&str> {
        self.rules
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.description.as_deref())
    }
}

impl Default for Policy {
    fn default() -> Self {
        Self::empty()
    }
}

/// Who is asking, and where: everything about the session a rule can look at.
#[derive(Clone, Copy, Debug)]
pub struct SessionContext<'a> {
    /// The authenticated identity (e-mail or subject). Not matched by rules today; carried for
    /// callers' logging and future conditions.
    pub identity: &'a str,
    pub groups: &'a [String],
    /// The resource (database target) name, matched by `resources`.
    pub resource: &'a str,
    /// The resource's environment, matched by `environments`.
    pub environment: &'a str,
    /// The grant's access level (`read-only`, `read-write`, ...), matched by `access_levels`.
    pub access_level: Option<&'a str>,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action: Action,
    /// The rule that decided; `None` when no rule matched (default allow),
    /// [`ON_PARSE_ERROR`] when the statement could not be parsed.
    pub rule: Option<String>,
    /// For deny and review: the rule's message (`"blocked by policy"` unless the rule sets
    /// one). For allow: the rule's message if it sets one.
    pub message: Option<String>,
    /// For review: approvals needed (1 for an `on_parse_error` review). 0 otherwise.
    pub approvals: u32,
    /// For review: the rule's approver entries (`group:NAME`, `user:EMAIL`); empty means the
    /// rule names none (who may approve is then the control plane's default).
    pub approvers: Vec<String>,
    /// For review: the longest an approver may let one approval cover the same statement
    /// shape (its fingerprint) for the same requester and resource, in minutes. 0 means an
    /// approval covers that one execution only. 0 for every other action.
    pub max_approval_minutes: u32,
    /// Every rule that matched, in file order (for audit and `policy test`).
    pub matched: Vec<String>,
}
