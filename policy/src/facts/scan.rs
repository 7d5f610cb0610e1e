//! An exhaustive walk over one statement's [`Shape`], recording what `summary` needs.
//!
//! Every `SelectStmt`/`InsertStmt`/`UpdateStmt`/`DeleteStmt`/`MergeStmt` node opens a *scope*
//! (kept in an arena with parent links), because CTE names, `WHERE` presence and row locks are
//! per query level. Every `RangeVar` is recorded in the scope it appears in, with a role taken
//! from the field that holds it; every `FuncCall` is recorded by name. The walk does not
//! resolve anything: CTE references are told apart from tables afterwards, because a
//! `SelectStmt` serializes its `FROM` before its `WITH`.
//!
//! Not guaranteed: roles are decided by position only (see [`role_of`]). `FOR UPDATE OF a`
//! names aliases, not tables, so those names are skipped and the lock is recorded for the
//! whole query level instead.

use super::shape::Shape;
use super::{StatementKind, TableRef, push_unique};

/// How a statement uses a relation it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Read,
    Write,
}

/// One query level (or the synthetic root, for the statement node itself).
#[derive(Debug, Default)]
pub(crate) struct Scope {
    /// `None` for the root.
    pub kind: Option<StatementKind>,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    /// When this scope is the body of a CTE: that CTE's index in the parent's `ctes`.
    pub cte_slot: Option<usize>,
    /// Names defined by this level's `WITH`, in order.
    pub ctes: Vec<String>,
    pub recursive: bool,
    pub has_where: bool,
    /// `SELECT ... INTO`: the `INTO` relation is among `relations` as a write.
    pub select_into: bool,
    pub locks_rows: bool,
    /// `MERGE ... THEN UPDATE/INSERT/DELETE` and `ON CONFLICT DO UPDATE` actions.
    pub actions: Vec<StatementKind>,
    pub relations: Vec<(TableRef, Role)>,
    pub functions: Vec<String>,
    /// A `set_config()` call that may change the role.
    pub sets_role: bool,
}

/// The walk's result: `scopes[0]` is the root; `top` is the statement's own scope (the root,
/// or `1` when the statement node is itself a query).
#[derive(Debug)]
pub(crate) struct Scan {
    pub scopes: Vec<Scope>,
    pub top: usize,
}

/// Where a value sits: the nearest enclosing struct and the field holding the value.
#[derive(Clone, Copy)]
struct Ctx {
    parent: &'static str,
    field: &'static str,
}

impl Ctx {
    fn at(parent: &'static str, field: &'static str) -> Self {
        Self { parent, field }
    }
}

/// Walks `shape`, skipping the named top-level fields (those the caller classifies itself).
pub(crate) fn scan(shape: &Shape, skip: &[&str]) -> Scan {
    let mut walker = Walker {
        scopes: vec![Scope::default()],
        current: 0,
        pending_cte: None,
    };
    match shape {
        Shape::Struct { name, fields } if !skip.is_empty() => {
            for (field, value) in fields.iter().filter(|(k, _)| !skip.contains(k)) {
                walker.visit(value, Ctx::at(name, field));
            }
        }
        _ => walker.visit(shape, Ctx::at("", "")),
    }
    let top = if skip.is_empty() && query_kind(shape.name()).is_some() {
        1
    } else {
        0
    };
    Scan {
        scopes: walker.scopes,
        top,
    }
}

/// The scope kind opened by a node type, if it is a query.
fn query_kind(name: &str) -> Option<StatementKind> {
    match name {
        "SelectStmt" => Some(StatementKind::Select),
        "InsertStmt" => Some(StatementKind::Insert),
        "UpdateStmt" => Some(StatementKind::Update),
        "DeleteStmt" => Some(StatementKind::Delete),
        "MergeStmt" => Some(StatementKind::Merge),
        _ => None,
    }
}

/// The role of a relation found at `ctx`. Targets of DML and `INTO` are writes; inside a query
/// everything else is a read; relations named directly by a utility statement are writes.
fn role_of(ctx: Ctx, in_query: bool) -> Role {
    match (ctx.parent, ctx.field) {
        ("InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt", "relation") => Role::Write,
        ("IntoClause", "rel") => Role::Write,
        _ if in_query => Role::Read,
        _ => Role::Write,
    }
}

struct Walker {
    scopes: Vec<Scope>,
    current: usize,
    /// Set while visiting a CTE's query: the CTE's slot, taken by the scope it opens.
    pending_cte: Option<usize>,
}

impl Walker {
    /// The scope being filled. `current` always indexes an existing scope: it starts at the
    /// root and only ever takes indices of scopes already pushed.
    fn scope(&mut self) -> &mut Scope {
        &mut self.scopes[self.current]
    }

    fn visit(&mut self, shape: &Shape, ctx: Ctx) {
        match shape {
            Shape::Seq(items) => items.iter().for_each(|item| self.visit(item, ctx)),
            Shape::Struct { name, fields } => self.visit_struct(shape, name, fields, ctx),
            _ => {}
        }
    }

    fn visit_fields(&mut self, name: &'static str, fields: &[(&'static str, Shape)]) {
        for (field, value) in fields {
            self.visit(value, Ctx::at(name, field));
        }
    }

    fn visit_struct(
        &mut self,
        shape: &Shape,
        name: &'static str,
        fields: &[(&'static str, Shape)],
        ctx: Ctx,
    ) {
        match name {
            "RangeVar" => self.relation(shape, ctx),
            "FuncCall" => {
                self.function(shape);
                self.visit_fields(name, fields);
            }
            "CommonTableExpr" => self.cte(shape, fields),
            "WithClause" => {
                if shape.field("recursive").is_some_and(Shape::as_bool) {
                    self.scope().recursive = true;
                }
                self.visit_fields(name, fields);
            }
            // `FOR UPDATE OF a, b` lists aliases; they are not relations.
            "LockingClause" => self.scope().locks_rows = true,
            "IntoClause" => {
                self.scope().select_into = true;
                self.visit_fields(name, fields);
            }
            "OnConflictClause" => {
                let action = shape.field("action").and_then(Shape::as_int);
                if action == Some(pg_query::protobuf::OnConflictAction::OnconflictUpdate as i64) {
                    push_unique(&mut self.scope().actions, StatementKind::Update);
                }
                self.visit_fields(name, fields);
            }
            "MergeWhenClause" => {
                if let Some(kind) = merge_action(shape) {
                    push_unique(&mut self.scope().actions, kind);
                }
                self.visit_fields(name, fields);
            }
            _ => match query_kind(name) {
                Some(kind) => self.query(kind, shape, name, fields),
                None => self.visit_fields(name, fields),
            },
        }
    }

    fn query(
        &mut self,
        kind: StatementKind,
        shape: &Shape,
        name: &'static str,
        fields: &[(&'static str, Shape)],
    ) {
        let index = self.scopes.len();
        let has_where = shape.field("where_clause").is_some_and(Shape::is_present);
        self.scopes.push(Scope {
            kind: Some(kind),
            parent: Some(self.current),
            cte_slot: self.pending_cte.take(),
            has_where,
            ..Scope::default()
        });
        self.scope().children.push(index);
        let saved = self.current;
        self.current = index;
        self.visit_fields(name, fields);
        self.current = saved;
    }

    fn cte(&mut self, shape: &Shape, fields: &[(&'static str, Shape)]) {
        let scope = self.scope();
        let slot = scope.ctes.len();
        scope.ctes.push(shape.str_field("ctename").to_owned());
        for (field, value) in fields {
            self.pending_cte = (*field == "ctequery").then_some(slot);
            self.visit(value, Ctx::at("CommonTableExpr", field));
        }
        self.pending_cte = None;
    }

    fn relation(&mut self, shape: &Shape, ctx: Ctx) {
        let name = shape.str_field("relname");
        if name.is_empty() {
            return;
        }
        let schema = Some(shape.str_field("schemaname")).filter(|s| !s.is_empty());
        let role = role_of(ctx, self.scope().kind.is_some());
        self.scope()
            .relations
            .push((TableRef::new(schema, name), role));
    }

    fn function(&mut self, shape: &Shape) {
        let parts: Vec<&str> = shape
            .field("funcname")
            .map(Shape::items)
            .unwrap_or_default()
            .iter()
            .map(|part| part.str_field("sval"))
            .collect();
        let name = parts.join(".").to_lowercase();
        if parts
            .last()
            .is_some_and(|last| last.eq_ignore_ascii_case("set_config"))
        {
            let first = shape.field("args").and_then(|args| args.items().first());
            if first.is_none_or(may_name_role_setting) {
                self.scope().sets_role = true;
            }
        }
        push_unique(&mut self.scope().functions, name);
    }
}

/// Whether `set_config`'s first argument may name `role` or `session_authorization`: yes
/// unless it is a string constant naming something else.
fn may_name_role_setting(arg: &Shape) -> bool {
    if arg.name() != "AConst" {
        return true;
    }
    match arg.field("val") {
        Some(val) if val.name() == "String" => {
            let setting = val.str_field("sval").trim().to_ascii_lowercase();
            setting == "role" || setting == "session_authorization"
        }
        _ => false,
    }
}

/// The statement kind a `MERGE ... WHEN ... THEN` clause performs.
fn merge_action(clause: &Shape) -> Option<StatementKind> {
    use pg_query::protobuf::CmdType;
    let command = clause.field("command_type").and_then(Shape::as_int)?;
    let command = CmdType::try_from(i32::try_from(command).ok()?).ok()?;
    match command {
        CmdType::CmdUpdate => Some(StatementKind::Update),
        CmdType::CmdInsert => Some(StatementKind::Insert),
        CmdType::CmdDelete => Some(StatementKind::Delete),
        _ => None,
    }
}
