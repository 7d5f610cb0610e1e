//! Facts of one statement node: the typed, per-statement-type part, plus the exhaustive walk.
//!
//! Statement types that wrap another statement (`EXPLAIN`, `PREPARE`, `CREATE TABLE AS`,
//! `DECLARE`, `COPY (query)`) classify it on its own as `inner` and skip it in their own walk;
//! `CREATE SCHEMA`'s elements and `ALTER DEFAULT PRIVILEGES`' grant become `nested`. Either
//! way the outer statement absorbs the wrapped facts.
//!
//! Not guaranteed: `DROP` reports relations only for relation-like object types (tables,
//! views, materialized views, foreign tables, sequences, indexes, and the tables of dropped
//! rules, triggers and policies).

use pg_query::NodeEnum;
use pg_query::protobuf::{DiscardMode, DropStmt, Node, ObjectType, VariableSetKind};

use super::error::ClassifyError;
use super::kind::kind_of;
use super::shape::Shape;
use super::{ClassifyOptions, CopyDirection, Statement, TableRef};
use super::{columns, plpgsql, push_unique, scan, summary};

/// How deep `DO` blocks may nest inside each other before the rest is reported as opaque.
const MAX_DEPTH: u8 = 8;

/// Classification context: session options and how deep inside `DO` bodies we are.
#[derive(Clone, Copy)]
pub(crate) struct Cx {
    pub options: ClassifyOptions,
    pub depth: u8,
}

impl Cx {
    pub(crate) fn top(options: ClassifyOptions) -> Self {
        Self { options, depth: 0 }
    }

    /// The context for statements inside a `DO` body, or `None` when nested too deeply.
    pub(crate) fn deeper(&self) -> Option<Self> {
        (self.depth < MAX_DEPTH).then_some(Self {
            options: self.options,
            depth: self.depth + 1,
        })
    }
}

/// Classifies one statement node.
pub(crate) fn classify_node(node: &NodeEnum, cx: &Cx) -> Result<Statement, ClassifyError> {
    use NodeEnum as N;
    let mut stmt = Statement::new(kind_of(node));
    let mut skip: &[&str] = &[];
    let mut inner: Option<&Node> = None;
    match node {
        N::ExplainStmt(s) => {
            stmt.explain_analyze = explain_analyze(&s.options);
            (skip, inner) = (&["query"], s.query.as_deref());
        }
        N::PrepareStmt(s) => {
            stmt.prepared_name = Some(s.name.clone());
            (skip, inner) = (&["query"], s.query.as_deref());
        }
        N::ExecuteStmt(s) => stmt.prepared_name = Some(s.name.clone()),
        N::DeallocateStmt(s) => {
            stmt.prepared_name = (!s.isall && !s.name.is_empty()).then(|| s.name.clone());
        }
        N::CreateTableAsStmt(s) => (skip, inner) = (&["query"], s.query.as_deref()),
        N::DeclareCursorStmt(s) => (skip, inner) = (&["query"], s.query.as_deref()),
        N::CopyStmt(s) => {
            let direction = if s.is_from {
                CopyDirection::From
            } else {
                CopyDirection::To
            };
            let server_file = !s.is_program && !s.filename.is_empty();
            stmt.copy = Some((direction, s.is_program, server_file));
            if let Some(rel) = &s.relation {
                let schema = Some(rel.schemaname.as_str()).filter(|s| !s.is_empty());
                let table = TableRef::new(schema, &rel.relname);
                match direction {
                    CopyDirection::From => stmt.tables_written.push(table),
                    CopyDirection::To => stmt.tables_read.push(table),
                }
            }
            (skip, inner) = (&["query", "relation"], s.query.as_deref());
        }
        N::CreateSchemaStmt(s) => {
            skip = &["schema_elts"];
            for element in s.schema_elts.iter().filter_map(|e| e.node.as_ref()) {
                let nested = classify_node(element, cx)?;
                stmt.absorb(&nested);
                stmt.nested.push(nested);
            }
        }
        N::AlterDefaultPrivilegesStmt(s) => {
            skip = &["action"];
            if let Some(action) = &s.action {
                let nested = classify_node(&N::GrantStmt(action.clone()), cx)?;
                stmt.absorb(&nested);
                stmt.nested.push(nested);
            }
        }
        N::DoStmt(s) => {
            let body = plpgsql::analyze(s, cx);
            stmt.opaque |= body.opaque;
            for nested in body.statements {
                stmt.absorb(&nested);
                stmt.nested.push(nested);
            }
        }
        N::VariableSetStmt(s) => {
            let name = s.name.to_lowercase();
            let reset_all = s.kind == VariableSetKind::VarResetAll as i32;
            stmt.set_role = reset_all || name == "role" || name == "session_authorization";
            stmt.setting = (!name.is_empty()).then_some(name);
        }
        N::VariableShowStmt(s) => {
            stmt.setting = Some(s.name.to_lowercase()).filter(|n| n != "all" && !n.is_empty());
        }
        N::DiscardStmt(s) => stmt.set_role = s.target == DiscardMode::DiscardAll as i32,
        N::DropStmt(s) => {
            for table in dropped_relations(s) {
                push_unique(&mut stmt.tables_written, table);
            }
        }
        _ => {}
    }
    let shape = Shape::of(node)?;
    summary::fill(&scan::scan(&shape, skip), &mut stmt);
    stmt.columns.absorb(&columns::column_refs(&shape));
    if let Some(inner) = inner.and_then(|n| n.node.as_ref()) {
        let inner = classify_node(inner, cx)?;
        stmt.absorb(&inner);
        stmt.inner = Some(Box::new(inner));
    }
    Ok(stmt)
}

/// Whether `EXPLAIN`'s options include `ANALYZE` that is not explicitly false.
fn explain_analyze(options: &[Node]) -> bool {
    options
        .iter()
        .filter_map(|o| match &o.node {
            Some(NodeEnum::DefElem(d)) if d.defname.eq_ignore_ascii_case("analyze") => Some(d),
            _ => None,
        })
        .any(|d| !is_false(d.arg.as_deref().and_then(|a| a.node.as_ref())))
}

/// PostgreSQL's `defGetBoolean` reading of an option value, answering only "clearly false".
/// Anything PostgreSQL would reject counts as true, so an odd spelling cannot hide `ANALYZE`.
fn is_false(arg: Option<&NodeEnum>) -> bool {
    match arg {
        Some(NodeEnum::Integer(i)) => i.ival == 0,
        Some(NodeEnum::Boolean(b)) => !b.boolval,
        Some(NodeEnum::String(s)) => {
            let word = s.sval.to_ascii_lowercase();
            matches!(word.as_str(), "0" | "of" | "off")
                || (!word.is_empty() && ("false".starts_with(&word) || "no".starts_with(&word)))
        }
        _ => false,
    }
}

/// The relations a `DROP` removes or changes.
fn dropped_relations(s: &DropStmt) -> Vec<TableRef> {
    use ObjectType as O;
    // For rules, triggers and policies the last name part is the object, the rest its table.
    let owned_by_table = match ObjectType::try_from(s.remove_type) {
        Ok(O::ObjectTable | O::ObjectView | O::ObjectMatview | O::ObjectForeignTable) => false,
        Ok(O::ObjectSequence | O::ObjectIndex) => false,
        Ok(O::ObjectRule | O::ObjectTrigger | O::ObjectPolicy) => true,
        _ => return Vec::new(),
    };
    s.objects
        .iter()
        .filter_map(|object| match &object.node {
            Some(NodeEnum::List(list)) => {
                let mut parts: Vec<&str> = list
                    .items
                    .iter()
                    .filter_map(|i| match &i.node {
                        Some(NodeEnum::String(s)) => Some(s.sval.as_str()),
                        _ => None,
                    })
                    .collect();
                if owned_by_table {
                    parts.pop();
                }
                TableRef::from_parts(&parts)
            }
            _ => None,
        })
        .collect()
}
