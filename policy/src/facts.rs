//! Statement facts: what a SQL string does, derived from PostgreSQL's own grammar.
//!
//! [`classify`] parses the text with `pg_query` (the real PostgreSQL 18 parser) and returns one
//! [`Statement`] per top-level statement: its kind, the tables it reads and writes, the functions
//! it calls, and the flags that guardrails look at. It is pure and never panics.
//!
//! Layout: `kind` (the kind enum and node → kind mapping), `table` (`TableRef`,
//! `CopyDirection`), `statement` (per-statement-type facts from the typed tree), `shape` +
//! `scan` + `summary` (an exhaustive walk of every node for tables, functions, CTEs and nested
//! data-modifying statements), `plpgsql` (best-effort look inside `DO` blocks), `error`.
//!
//! Conventions, chosen to fail closed:
//! - A statement's `tables_read`, `tables_written`, `functions`, `without_where`,
//!   `modifying_cte`, `set_role` and `opaque` are a *superset* of those of its `inner` and
//!   `nested` statements, so a rule that only looks at top-level statements never misses
//!   something a wrapped statement touches — even when, as with plain `EXPLAIN`, the wrapped
//!   statement is not executed.
//! - Data-modifying work that is not the statement's own kind is reported as `nested`
//!   statements, and therefore by [`StatementFacts::kind_names`]: data-modifying CTEs
//!   (`WITH d AS (DELETE ...) SELECT ...` keeps kind `select` and nests a `delete`),
//!   `MERGE`'s `WHEN` actions, `INSERT ... ON CONFLICT DO UPDATE` (nests an `update`),
//!   `SELECT ... INTO` (nests a `create`), `CREATE SCHEMA`'s elements, `ALTER DEFAULT
//!   PRIVILEGES`' grant, data-modifying statements in rule actions and `BEGIN ATOMIC` bodies,
//!   and the statements found inside a `DO` block.
//! - Relations named by utility statements (DDL, `TRUNCATE`, `LOCK`, `VACUUM`, `GRANT ... ON
//!   TABLE`, `CREATE TRIGGER ... ON`, `REFERENCES` targets, ...) count as *written*: their
//!   definition, privileges, statistics or locks change. `SELECT ... FOR UPDATE/SHARE` counts
//!   the tables it reads as written too (PostgreSQL requires `UPDATE` privilege for it).
//!
//! NOT guaranteed:
//! - Facts are syntactic. Views, rules, triggers, `SECURITY DEFINER` functions and functions in
//!   general can read and write tables that no statement names; `search_path` decides which
//!   `t` an unqualified `t` is. Policies must treat `functions` as capabilities.
//! - Operators, casts and type input functions call functions that are not in `functions`.
//! - A `DO` block always has kind `do`. Its body is analysed only if it is PL/pgSQL and parses;
//!   dynamic SQL (`EXECUTE`), other languages and unparseable bodies set `opaque`. Function
//!   bodies in `CREATE FUNCTION ... AS $$...$$` are not analysed (they run later, when called).
//! - `without_where` is syntactic: `WHERE true` counts as a `WHERE`.
//! - The parse assumes `standard_conforming_strings = on` unless [`ClassifyOptions`] says
//!   otherwise; the caller must pass the session's real setting.
//! - Trees nested deeper than `pg_query`'s decoder allows (roughly 45 levels of expression
//!   nesting, e.g. `1+1+...+1` with 50 terms) are reported as parse errors.

mod columns;
mod error;
mod kind;
mod plpgsql;
mod scan;
mod shape;
mod statement;
mod summary;
mod table;

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::{Deserialize, Serialize};

pub use columns::{ColumnRefs, CopyOptions};
pub use kind::StatementKind;
pub use table::{CopyDirection, TableRef};

use error::ClassifyError;

/// The facts of one statement. See the module documentation for the conventions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub kind: StatementKind,
    /// Relations read (CTE references excluded), in first-seen order, without duplicates.
    pub tables_read: Vec<TableRef>,
    /// Relations written or otherwise changed, in first-seen order, without duplicates.
    pub tables_written: Vec<TableRef>,
    /// Called functions, lower-case, schema-qualified when written so
    /// (`pg_catalog.pg_read_file`); SQL syntax such as `EXTRACT(...)` appears as the
    /// `pg_catalog.*` function PostgreSQL turns it into.
    pub functions: Vec<String>,
    /// An `UPDATE` or `DELETE` (here or in anything nested) has no `WHERE`.
    pub without_where: bool,
    /// A `WITH` clause (here or in anything nested) holds `INSERT`/`UPDATE`/`DELETE`/`MERGE`.
    pub modifying_cte: bool,
    /// For `COPY`: direction, whether it uses `PROGRAM`, and whether it reads or writes a file
    /// on the database server (rather than `STDIN`/`STDOUT`).
    pub copy: Option<(CopyDirection, bool, bool)>,
    /// `EXPLAIN ANALYZE`: the explained statement is executed.
    pub explain_analyze: bool,
    /// The statement wrapped by `EXPLAIN`, `PREPARE`, `CREATE TABLE AS`, `DECLARE CURSOR` or
    /// `COPY (query)`, classified on its own.
    pub inner: Option<Box<Statement>>,
    /// `PREPARE name`, `EXECUTE name`, `DEALLOCATE name` (`None` for `DEALLOCATE ALL`).
    pub prepared_name: Option<String>,
    /// The statement may change the session's role: `SET ROLE`, `SET SESSION AUTHORIZATION`,
    /// `RESET ROLE`, `RESET ALL`, `DISCARD ALL`, or `set_config()` on `role` or
    /// `session_authorization` (or with a first argument that is not a constant).
    pub set_role: bool,
    /// Other data-modifying work this statement does, each classified on its own (see the
    /// module documentation for what lands here).
    pub nested: Vec<Statement>,
    /// Part of what this statement runs could not be analysed (dynamic SQL or a non-PL/pgSQL
    /// body in a `DO` block, a `DO` body that did not parse). Treat as "could do anything".
    pub opaque: bool,
    /// `SELECT ... FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE` somewhere in the statement.
    pub locks_rows: bool,
    /// The run-time parameter named by `SET`, `RESET` or `SHOW`, lower-case (`None` for
    /// `RESET ALL`, `SHOW ALL` and every other kind).
    pub setting: Option<String>,
    /// Column references by name, for masking (wrapped and nested statements included).
    #[serde(default)]
    pub columns: ColumnRefs,
}

impl Statement {
    /// A statement of `kind` with no facts yet.
    pub fn new(kind: StatementKind) -> Self {
        Self {
            kind,
            tables_read: Vec::new(),
            tables_written: Vec::new(),
            functions: Vec::new(),
            without_where: false,
            modifying_cte: false,
            copy: None,
            explain_analyze: false,
            inner: None,
            prepared_name: None,
            set_role: false,
            nested: Vec::new(),
            opaque: false,
            locks_rows: false,
            setting: None,
            columns: ColumnRefs::default(),
        }
    }

    /// Whether the statement calls `name`. An unqualified `name` matches any schema
    /// (`pg_read_file` matches `pg_catalog.pg_read_file`); a qualified one must match exactly.
    /// Case is ignored.
    pub fn calls(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.functions.iter().any(|f| {
            *f == name || (!name.contains('.') && f.rsplit('.').next() == Some(name.as_str()))
        })
    }

    /// This statement, then its inner statement and nested statements, depth first.
    pub fn walk(&self) -> Vec<&Statement> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(s) = stack.pop() {
            out.push(s);
            stack.extend(s.nested.iter().rev());
            if let Some(inner) = &s.inner {
                stack.push(inner);
            }
        }
        out
    }

    /// Folds the facts of a wrapped or nested statement into this one.
    pub(crate) fn absorb(&mut self, other: &Statement) {
        extend_unique(&mut self.tables_read, &other.tables_read);
        extend_unique(&mut self.tables_written, &other.tables_written);
        extend_unique(&mut self.functions, &other.functions);
        self.without_where |= other.without_where;
        self.modifying_cte |= other.modifying_cte;
        self.set_role |= other.set_role;
        self.opaque |= other.opaque;
        self.locks_rows |= other.locks_rows;
        self.columns.absorb(&other.columns);
    }
}

pub(crate) fn push_unique<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        list.push(item);
    }
}

fn extend_unique<T: PartialEq + Clone>(list: &mut Vec<T>, items: &[T]) {
    for item in items {
        push_unique(list, item.clone());
    }
}

/// The facts of a whole statement string (a simple-query message may hold several).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementFacts {
    /// One entry per top-level statement, in order. Empty for an empty or comment-only string,
    /// and whenever `parse_error` is set.
    pub statements: Vec<Statement>,
    /// Why the string could not be classified. A failure is never reported as "no statements".
    pub parse_error: Option<String>,
}

impl StatementFacts {
    /// Distinct kind names over all statements, including inner and nested ones, in
    /// first-seen order.
    pub fn kind_names(&self) -> Vec<&'static str> {
        self.kinds().into_iter().map(|k| k.as_str()).collect()
    }

    /// Distinct kinds over all statements, including inner and nested ones, in first-seen
    /// order.
    pub fn kinds(&self) -> Vec<StatementKind> {
        let mut kinds = Vec::new();
        for s in self.all() {
            push_unique(&mut kinds, s.kind);
        }
        kinds
    }

    /// Every statement, including inner and nested ones, depth first.
    pub fn all(&self) -> Vec<&Statement> {
        self.statements.iter().flat_map(Statement::walk).collect()
    }

    pub fn is_parse_failure(&self) -> bool {
        self.parse_error.is_some()
    }

    /// More than one top-level statement.
    pub fn is_multi_statement(&self) -> bool {
        self.statements.len() > 1
    }

    fn failed(err: ClassifyError) -> Self {
        Self {
            statements: Vec::new(),
            parse_error: Some(err.to_string()),
        }
    }
}

/// Session settings that change how PostgreSQL tokenizes a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClassifyOptions {
    /// The session's `standard_conforming_strings` (default `true`, PostgreSQL's default since
    /// 9.1). With `off`, backslashes escape quotes in `'...'` literals, which moves statement
    /// boundaries; the gateway must pass the value the server reports.
    pub standard_conforming_strings: bool,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        Self {
            standard_conforming_strings: true,
        }
    }
}

impl ClassifyOptions {
    pub(crate) fn parser_options(&self) -> pg_query::ParserOptions {
        if self.standard_conforming_strings {
            pg_query::ParserOptions::DEFAULT
        } else {
            pg_query::ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS
        }
    }
}

/// Classifies `sql` with default [`ClassifyOptions`]. Never panics, whatever the input.
pub fn classify(sql: &str) -> StatementFacts {
    classify_with(sql, ClassifyOptions::default())
}

/// Classifies `sql` as a session with `options` would parse it. Never panics: a parse failure,
/// and even a panic inside `pg_query`, is reported in `parse_error`.
pub fn classify_with(sql: &str, options: ClassifyOptions) -> StatementFacts {
    match catch_unwind(AssertUnwindSafe(|| classify_inner(sql, options))) {
        Ok(Ok(statements)) => StatementFacts {
            statements,
            parse_error: None,
        },
        Ok(Err(err)) => StatementFacts::failed(err),
        Err(_) => StatementFacts::failed(ClassifyError::Panicked),
    }
}

fn classify_inner(sql: &str, options: ClassifyOptions) -> Result<Vec<Statement>, ClassifyError> {
    let parsed = pg_query::parse(sql, options.parser_options())?;
    let cx = statement::Cx::top(options);
    parsed
        .protobuf
        .stmts
        .iter()
        .map(|raw| {
            let node = raw.stmt.as_ref().and_then(|n| n.node.as_ref());
            let node = node.ok_or_else(|| ClassifyError::Tree("empty statement node".into()))?;
            statement::classify_node(node, &cx)
        })
        .collect()
}
