//! Masking: which values of a result a session must not see, and what it sees instead.
//!
//! A `[[mask]]` policy section names sensitive data three ways: columns by
//! `schema.table.column` globs, output columns by name globs, and content detectors (see
//! [`detect`]). A rule applies to sessions on its resources and environments, except sessions
//! whose access level is in `unless_levels` (default `["unmask"]`: a grant at level `unmask`
//! lifts masking, and that grant needed approval).
//!
//! The pure part lives here; the gateway feeds it the upstream's catalog and applies the
//! result to the wire:
//! - [`MaskIndex`] joins the rules with a [`Catalog`]: the masked attributes `(table oid,
//!   attnum)` of tables, and of views whose definition uses a masked column as a value.
//! - [`MaskIndex::statement`] reads a statement's facts: does it use a masked column (or a whole
//!   row, or `*`, of a relation holding one) as a value? Then every output column without a
//!   provable origin is masked, and so is every column when the statement has a set operation
//!   or `RETURNING` (their origins are not reported). A statement that would write such values
//!   anywhere is refused. A statement that touches a relation with masked columns at all has its
//!   error and notice texts withheld (they can quote values).
//! - [`MaskIndex::fields`] decides each output column of a result from its RowDescription
//!   origin (table oid, attnum), its name and the statement's verdict.
//! - [`style`] turns a value into its masked form.
//!
//! Guaranteed, for a session under masking: a value of a masked column does not reach the client
//! in the clear through a direct reference, an alias, an expression, `*`, a subquery, a CTE, a
//! view (read through the view's origin), `UNION`, JSON and aggregate functions, `RETURNING`, a
//! cursor declared in the session, or an error message of a statement touching a masked
//! relation. Not guaranteed: a filter (`WHERE email LIKE 'a%'`) reveals which rows match; a
//! user-defined function, trigger or rule reads tables out of sight (with `strict = true`,
//! statements calling functions outside `pg_catalog` have every column masked); names are
//! matched without `search_path`, so a masked `public.customers.email` also masks `email` of
//! any other relation named `customers` (over-masking, never under-masking); content detectors
//! find what their patterns describe and nothing else.

pub mod detect;
mod index;
pub mod style;

pub use index::{
    Catalog, CatalogRelation, CopyFormat, CopyMask, Field, MaskIndex, RelationKind, StatementMask,
    writes,
};
pub use style::{MaskKey, Masked, Style};

use crate::rules::Glob;

/// The access level that, by default, lifts masking.
pub const UNMASK_LEVEL: &str = "unmask";

/// One `[[mask]]` section, compiled.
#[derive(Clone, Debug)]
pub struct MaskRule {
    pub name: String,
    /// `schema.table.column` globs.
    pub columns: Vec<Glob>,
    /// Output column name globs.
    pub names: Vec<Glob>,
    pub detect: Vec<detect::Detector>,
    pub style: Style,
    /// Statements the gateway cannot see through (user functions, `DO`, `CALL`, unparsable
    /// text) have every output column masked.
    pub strict: bool,
    pub resources: Vec<Glob>,
    pub environments: Vec<Glob>,
    /// Access levels this rule does not apply to.
    pub unless_levels: Vec<String>,
}

impl MaskRule {
    /// Whether the rule applies to a session on `resource` in `environment` at `level`.
    pub fn applies(&self, resource: &str, environment: &str, level: Option<&str>) -> bool {
        let scoped =
            |globs: &[Glob], text: &str| globs.is_empty() || globs.iter().any(|g| g.matches(text));
        scoped(&self.resources, resource)
            && scoped(&self.environments, environment)
            && !level.is_some_and(|l| self.unless_levels.iter().any(|u| u == l))
    }
}

/// The mask rules that apply to one session, in file order.
#[derive(Clone, Debug, Default)]
pub struct Masking {
    pub rules: Vec<MaskRule>,
}

impl Masking {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Names of the rules, for audit.
    pub fn rule_names(&self) -> Vec<&str> {
        self.rules.iter().map(|r| r.name.as_str()).collect()
    }
}
