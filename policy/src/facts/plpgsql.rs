//! Best-effort look inside `DO` blocks.
//!
//! A `DO` body is PL/pgSQL source in a string. We wrap it in a throw-away `CREATE FUNCTION`,
//! let `pg_query::parse_plpgsql` (PostgreSQL's own PL/pgSQL parser) turn it into JSON, and
//! classify every embedded SQL statement and expression (`PLpgSQL_expr`) with the main
//! grammar, in the parse mode PL/pgSQL itself would use.
//!
//! NOT guaranteed, and reported through `opaque` instead: dynamic SQL (`EXECUTE`, `OPEN ... FOR
//! EXECUTE`, `RETURN QUERY EXECUTE`) whose text only exists at run time, bodies in other
//! languages, and bodies our parser rejects. The `DO` statement keeps kind `do` regardless, so
//! a policy keyed on kinds never sees a `DO` block as harmless by omission. Expressions that
//! touch no table and call no function (`IF n > 1`) are dropped rather than reported as
//! `select` statements.

use pg_query::NodeEnum;
use pg_query::protobuf::DoStmt;

use super::statement::{Cx, classify_node};
use super::{Statement, StatementKind};

/// What a `DO` body runs, as far as we can tell.
pub(crate) struct DoBody {
    pub statements: Vec<Statement>,
    pub opaque: bool,
}

impl DoBody {
    fn opaque() -> Self {
        Self {
            statements: Vec::new(),
            opaque: true,
        }
    }
}

pub(crate) fn analyze(stmt: &DoStmt, cx: &Cx) -> DoBody {
    let (body, language) = body_and_language(stmt);
    let (Some(body), Some(inner_cx)) = (body, cx.deeper()) else {
        return DoBody::opaque();
    };
    if !language.is_none_or(|l| l.eq_ignore_ascii_case("plpgsql")) {
        return DoBody::opaque();
    }
    let Some(source) = as_function(body) else {
        return DoBody::opaque();
    };
    let Ok(json) = pg_query::parse_plpgsql(&source) else {
        return DoBody::opaque();
    };

    let mut result = DoBody {
        statements: Vec::new(),
        opaque: false,
    };
    let mut stack = vec![&json];
    while let Some(value) = stack.pop() {
        if let Some(items) = value.as_array() {
            stack.extend(items.iter().rev());
            continue;
        }
        let Some(object) = value.as_object() else {
            continue;
        };
        for (key, child) in object {
            if key.starts_with("PLpgSQL_stmt_dyn") || key == "dynquery" {
                result.opaque = true;
            }
            if key == "PLpgSQL_expr" {
                let query = child.get("query").and_then(|q| q.as_str());
                let mode = child.get("parseMode").and_then(|m| m.as_i64()).unwrap_or(0);
                match query.and_then(|q| classify_expr(q, mode, &inner_cx)) {
                    Some(statements) => result.statements.extend(statements),
                    None => result.opaque = true,
                }
            }
            stack.push(child);
        }
    }
    result
}

/// The `AS` body and `LANGUAGE` of a `DO` statement.
fn body_and_language(stmt: &DoStmt) -> (Option<&str>, Option<&str>) {
    let (mut body, mut language) = (None, None);
    for arg in &stmt.args {
        let Some(NodeEnum::DefElem(def)) = &arg.node else {
            continue;
        };
        let Some(NodeEnum::String(value)) = def.arg.as_deref().and_then(|a| a.node.as_ref()) else {
            continue;
        };
        match def.defname.as_str() {
            "as" => body = Some(value.sval.as_str()),
            "language" => language = Some(value.sval.as_str()),
            _ => {}
        }
    }
    (body, language)
}

/// Wraps a `DO` body in a function definition, dollar-quoted with a tag whose first
/// occurrence in `body + tag` is the closing one (so the body cannot end the quote early).
fn as_function(body: &str) -> Option<String> {
    (0..64).map(|n| format!("$cs{n}$")).find_map(|tag| {
        let closed = format!("{body}{tag}");
        (closed.find(&tag) == Some(body.len())).then(|| {
            format!(
                "CREATE FUNCTION countersign_do() RETURNS void LANGUAGE plpgsql AS {tag}{closed}"
            )
        })
    })
}

/// Classifies one embedded SQL text, parsed in PL/pgSQL's `mode` (0 = statement,
/// 2 = expression, 3..=5 = assignment). Returns only statements that carry facts; `None`
/// when the text cannot be analysed.
fn classify_expr(query: &str, mode: i64, cx: &Cx) -> Option<Vec<Statement>> {
    let mode = i32::try_from(mode)
        .ok()
        .filter(|m| matches!(m, 0 | 2..=5))?;
    let options = pg_query::ParserOptions::from(mode) | cx.options.parser_options();
    let parsed = pg_query::parse(query, options).ok()?;
    let mut out = Vec::new();
    for raw in &parsed.protobuf.stmts {
        let node = raw.stmt.as_ref().and_then(|n| n.node.as_ref())?;
        let stmt = classify_node(node, cx).ok()?;
        if !is_trivial(&stmt) {
            out.push(stmt);
        }
    }
    Some(out)
}

/// A plain expression evaluation: a `SELECT` that reads, writes and calls nothing.
fn is_trivial(stmt: &Statement) -> bool {
    stmt.kind == StatementKind::Select && *stmt == Statement::new(StatementKind::Select)
}
