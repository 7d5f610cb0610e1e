//! Countersign's pure, I/O-free policy code, shared by the gateway and the control plane.
//!
//! Today this crate derives *statement facts*: [`classify`] turns SQL text into one
//! [`Statement`] per top-level statement (kind, tables read and written, functions called,
//! `WHERE` presence, `COPY` details, wrapped and nested statements), using PostgreSQL's own
//! grammar through `pg_query`. [`FactsCache`] memoizes that by statement text. On top of the
//! facts, `rules` holds the guardrail language: [`Policy::parse`] compiles a TOML policy file
//! (reporting every error at once) and [`decide`] turns a policy, a session and a statement's
//! facts into a [`Decision`].
//!
//! Layout: `facts` (the classifier; its module docs state the conventions), `cache`,
//! `fingerprint` (statement shapes, for approvals that cover more than one execution), `rules`
//! (the policy language; its module docs state the matching rules and precedence).
//!
//! Not guaranteed: statement facts describe what the text *says*, not everything the server
//! will do when it runs it — views, rules, triggers and functions act out of sight, and name
//! resolution depends on the session's `search_path`. See `facts` for the precise limits.

pub mod cache;
pub mod facts;
pub mod fingerprint;
pub mod mask;
pub mod rules;

pub use cache::{CacheStats, FactsCache, MAX_CACHED_SQL_LEN, shape_determines_facts, shape_key};
pub use facts::{
    ClassifyOptions, ColumnRefs, CopyDirection, Statement, StatementFacts, StatementKind, TableRef,
    classify, classify_with,
};
pub use fingerprint::fingerprint;
pub use rules::{
    AccessRule, Action, BINDING_ROLES, BindingSpec, DEFAULT_DECIDE_WITHIN, Decision, Glob,
    GrantRule, Policy, PolicyError, PolicyErrors, READ_ONLY, READ_ONLY_RULE, SessionContext,
    decide, names_member, read_only_violation,
};
