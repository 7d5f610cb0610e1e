//! Turns a [`Scan`] into statement facts: resolves CTE references, applies row locks, and
//! splits data-modifying sub-queries out as nested statements.
//!
//! A CTE name is visible in the query level that defines it and in everything below, except
//! that a non-recursive CTE's own body (and those of earlier CTEs) cannot see it or later
//! ones — there `d` names the table `d`. Not guaranteed: a schema-qualified name is always a
//! table, and an unqualified name that matches a visible CTE is always the CTE, as PostgreSQL
//! resolves them.

use super::scan::{Role, Scan, Scope};
use super::{Statement, StatementKind, TableRef, push_unique};

/// Adds the facts of `scan` (from its `top` scope down) to `stmt`.
pub(crate) fn fill(scan: &Scan, stmt: &mut Statement) {
    collect(scan, scan.top, stmt);
}

/// Aggregates the facts of `index` and its subtree into `out`. A data-modifying child becomes
/// a nested statement of `out` (and is aggregated through it).
fn collect(scan: &Scan, index: usize, out: &mut Statement) {
    let Some(scope) = scan.scopes.get(index) else {
        return;
    };
    let locked = is_locked(scan, index);
    for (table, role) in &scope.relations {
        match role {
            Role::Write => push_unique(&mut out.tables_written, table.clone()),
            Role::Read if table.schema.is_none() && is_cte_ref(scan, index, &table.name) => {}
            Role::Read => {
                push_unique(&mut out.tables_read, table.clone());
                if locked {
                    push_unique(&mut out.tables_written, table.clone());
                }
            }
        }
    }
    for function in &scope.functions {
        push_unique(&mut out.functions, function.clone());
    }
    out.set_role |= scope.sets_role;
    out.locks_rows |= scope.locks_rows;
    if matches!(
        scope.kind,
        Some(StatementKind::Update | StatementKind::Delete)
    ) && !scope.has_where
    {
        out.without_where = true;
    }
    for action in &scope.actions {
        let mut nested = Statement::new(*action);
        nested.tables_written = targets(scope);
        out.nested.push(nested);
    }
    if scope.select_into && scope.kind == Some(StatementKind::Select) {
        let mut nested = Statement::new(StatementKind::Create);
        nested.tables_written = targets(scope);
        out.nested.push(nested);
    }
    for &child_index in &scope.children {
        let Some(child) = scan.scopes.get(child_index) else {
            continue;
        };
        match child.kind {
            Some(kind) if kind.modifies_rows() => {
                let mut nested = Statement::new(kind);
                collect(scan, child_index, &mut nested);
                out.modifying_cte |= child.cte_slot.is_some();
                out.absorb(&nested);
                out.nested.push(nested);
            }
            _ => collect(scan, child_index, out),
        }
    }
}

/// The relations a scope writes directly (its DML target or `INTO` relation).
fn targets(scope: &Scope) -> Vec<TableRef> {
    let mut out = Vec::new();
    for (table, role) in &scope.relations {
        if *role == Role::Write {
            push_unique(&mut out, table.clone());
        }
    }
    out
}

/// Whether a `FOR UPDATE/SHARE` clause at this level or above covers relations read here.
/// Over-approximates: PostgreSQL does not lock through sub-links in `WHERE`.
fn is_locked(scan: &Scan, index: usize) -> bool {
    ancestors(scan, index).any(|(scope, _)| scope.locks_rows)
}

/// Whether the unqualified `name`, read at `index`, refers to a CTE rather than a table.
fn is_cte_ref(scan: &Scan, index: usize, name: &str) -> bool {
    ancestors(scan, index).any(|(scope, from)| {
        // Coming up from a CTE body of a non-recursive WITH, only earlier CTEs are visible.
        let visible = match from.and_then(|child| child.cte_slot) {
            Some(slot) if !scope.recursive => scope.ctes.get(..slot).unwrap_or_default(),
            _ => &scope.ctes[..],
        };
        visible.iter().any(|cte| cte == name)
    })
}

/// `index` and its ancestors, each with the child it was reached from (`None` for `index`).
fn ancestors(scan: &Scan, index: usize) -> impl Iterator<Item = (&Scope, Option<&Scope>)> {
    let mut next = scan.scopes.get(index).map(|scope| (scope, None));
    std::iter::from_fn(move || {
        let (scope, from) = next?;
        next = scope
            .parent
            .and_then(|p| scan.scopes.get(p))
            .map(|parent| (parent, Some(scope)));
        Some((scope, from))
    })
}
