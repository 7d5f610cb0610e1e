//! Column references of a statement, for masking: which column names a statement uses as
//! *values* (that can reach a result row, an error message or a written row) and which only
//! as *filters* (that decide which rows, never what a row holds).
//!
//! The walk visits every node of the statement's [`Shape`], including wrapped statements
//! (`DECLARE`, `COPY (query)`, `PREPARE`, `CREATE TABLE AS`, `EXPLAIN`). A column reference
//! is a filter when any enclosing field is one of [`FILTER_FIELDS`] (`WHERE`, `JOIN ... ON`,
//! `HAVING`, `ORDER BY`, `GROUP BY`, `LIMIT`, window partitions and orderings, aggregate
//! `FILTER`, `MERGE ... ON`); a scalar subquery inside a `WHERE` is a filter as a whole.
//!
//! Not guaranteed (the masking plan compensates by failing closed): names are not resolved to
//! relations, so a reference counts by its last name part whatever table it belongs to; a
//! filter still leaks one bit per row through which rows come back, and its values can reach
//! error messages (the gateway withholds those, see `mask`).

use serde::{Deserialize, Serialize};

use super::shape::Shape;

/// Fields whose expressions only decide which rows, or in which order, come back.
const FILTER_FIELDS: &[&str] = &[
    "where_clause",
    "having_clause",
    "quals",
    "sort_clause",
    "group_clause",
    "limit_count",
    "limit_offset",
    "distinct_clause",
    "partition_clause",
    "order_clause",
    "agg_filter",
    "join_condition",
];

/// What a statement references, by column name. Names are as the parser produced them
/// (unquoted identifiers folded to lower case).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnRefs {
    /// Last name part of each column reference in a value position, without duplicates.
    /// A single-part reference may also name a whole row (`to_jsonb(c)`), see `whole_rows`.
    pub values: Vec<String>,
    /// Last name part of references found only in filtering positions.
    pub filters: Vec<String>,
    /// `*` (qualifier `""`) or `q.*` in a value position, by qualifier.
    pub stars: Vec<String>,
    /// Relations named with an alias: `(alias, relation name)`.
    pub aliases: Vec<(String, String)>,
    /// `UNION`, `INTERSECT` or `EXCEPT` somewhere.
    pub set_operation: bool,
    /// A `RETURNING` list somewhere.
    pub returning: bool,
    /// `DECLARE name CURSOR`.
    pub declares_cursor: Option<String>,
    /// `FETCH` or `MOVE` on the named cursor.
    pub fetches_cursor: Option<String>,
    /// `COPY`: its direction, relation, column list and options.
    pub copy: Option<CopyOptions>,
}

/// What a `COPY` statement says about the rows it streams.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOptions {
    /// `COPY ... TO` (rows go to the client) rather than `FROM`.
    pub to: bool,
    /// The relation copied; `None` for `COPY (query)`.
    pub relation: Option<String>,
    /// The column list, empty when none is given.
    pub columns: Vec<String>,
    /// `text` (the default), `csv` or `binary`, lower case.
    pub format: String,
    pub delimiter: Option<String>,
    pub null: Option<String>,
    pub quote: Option<String>,
    pub escape: Option<String>,
    /// `HEADER` (any value but false).
    pub header: bool,
}

impl ColumnRefs {
    /// Whether `name` is used as a value, or (with `any`) anywhere.
    pub fn uses(&self, name: &str, any: bool) -> bool {
        self.values.iter().any(|v| v == name) || (any && self.filters.iter().any(|v| v == name))
    }

    /// Merges `other` into `self`.
    pub(crate) fn absorb(&mut self, other: &ColumnRefs) {
        for v in &other.values {
            push(&mut self.values, v);
        }
        for v in &other.filters {
            push(&mut self.filters, v);
        }
        for v in &other.stars {
            push(&mut self.stars, v);
        }
        for a in &other.aliases {
            if !self.aliases.contains(a) {
                self.aliases.push(a.clone());
            }
        }
        self.set_operation |= other.set_operation;
        self.returning |= other.returning;
        if self.declares_cursor.is_none() {
            self.declares_cursor.clone_from(&other.declares_cursor);
        }
        if self.fetches_cursor.is_none() {
            self.fetches_cursor.clone_from(&other.fetches_cursor);
        }
        if self.copy.is_none() {
            self.copy.clone_from(&other.copy);
        }
    }
}

fn push(list: &mut Vec<String>, name: &str) {
    if !list.iter().any(|n| n == name) {
        list.push(name.to_owned());
    }
}

/// The column references of the statement `shape`.
pub(crate) fn column_refs(shape: &Shape) -> ColumnRefs {
    let mut out = ColumnRefs::default();
    visit(shape, false, &mut out);
    // A name used as a value anywhere is not "only a filter".
    let values = out.values.clone();
    out.filters.retain(|f| !values.contains(f));
    out
}

fn visit(shape: &Shape, filter: bool, out: &mut ColumnRefs) {
    match shape {
        Shape::Seq(items) => items.iter().for_each(|i| visit(i, filter, out)),
        Shape::Struct { name, fields } => {
            match *name {
                "ColumnRef" => return column_ref(shape, filter, out),
                "RangeVar" => {
                    let alias = shape
                        .field("alias")
                        .map(|a| a.str_field("aliasname"))
                        .unwrap_or("");
                    let rel = shape.str_field("relname");
                    if !alias.is_empty() && !rel.is_empty() {
                        let pair = (alias.to_owned(), rel.to_owned());
                        if !out.aliases.contains(&pair) {
                            out.aliases.push(pair);
                        }
                    }
                }
                // `op` is SETOP_NONE (1) for a plain SELECT; UNION/INTERSECT/EXCEPT above.
                "SelectStmt" if shape.field("op").and_then(Shape::as_int).unwrap_or(0) > 1 => {
                    out.set_operation = true;
                }
                "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt"
                    if shape
                        .field("returning_list")
                        .is_some_and(|r| !r.items().is_empty()) =>
                {
                    out.returning = true;
                }
                // `COPY t (a, b) TO ...` names its columns as plain strings.
                "CopyStmt" => {
                    let copy = copy_options(shape);
                    for name in &copy.columns {
                        push(&mut out.values, name);
                    }
                    out.copy = Some(copy);
                }
                "DeclareCursorStmt" => {
                    out.declares_cursor = Some(shape.str_field("portalname").to_owned());
                }
                "FetchStmt" => {
                    out.fetches_cursor = Some(shape.str_field("portalname").to_owned());
                }
                _ => {}
            }
            for (field, value) in fields {
                visit(value, filter || FILTER_FIELDS.contains(field), out);
            }
        }
        _ => {}
    }
}

fn column_ref(shape: &Shape, filter: bool, out: &mut ColumnRefs) {
    let parts = shape.field("fields").map(Shape::items).unwrap_or_default();
    let star = parts.last().is_some_and(|p| p.name() == "AStar");
    if star {
        if !filter {
            let qualifier = match parts.len() {
                0 | 1 => "",
                n => parts.get(n - 2).map_or("", |p| p.str_field("sval")),
            };
            push(&mut out.stars, qualifier);
        }
        return;
    }
    let Some(last) = parts.last().map(|p| p.str_field("sval")) else {
        return;
    };
    if last.is_empty() {
        return;
    }
    if filter {
        push(&mut out.filters, last);
    } else {
        push(&mut out.values, last);
    }
}

fn copy_options(shape: &Shape) -> CopyOptions {
    let mut copy = CopyOptions {
        to: !shape.field("is_from").is_some_and(Shape::as_bool),
        relation: shape
            .field("relation")
            .map(|r| r.str_field("relname").to_owned())
            .filter(|r| !r.is_empty()),
        columns: shape
            .field("attlist")
            .map(Shape::items)
            .unwrap_or_default()
            .iter()
            .map(|i| i.str_field("sval").to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
        format: "text".to_owned(),
        ..CopyOptions::default()
    };
    for option in shape.field("options").map(Shape::items).unwrap_or_default() {
        let arg = option.field("arg");
        let text = arg.map(|a| a.str_field("sval").to_owned());
        match option.str_field("defname") {
            "format" => copy.format = text.unwrap_or_default().to_lowercase(),
            "delimiter" => copy.delimiter = text,
            "null" => copy.null = text,
            "quote" => copy.quote = text,
            "escape" => copy.escape = text,
            "header" => {
                // `HEADER`, `HEADER true`, `HEADER match`, `HEADER 1` all mean a header line.
                copy.header = match arg {
                    None => true,
                    Some(a) if a.name() == "Boolean" => {
                        a.field("boolval").is_some_and(Shape::as_bool)
                    }
                    Some(a) if a.name() == "Integer" => {
                        a.field("ival").and_then(Shape::as_int) != Some(0)
                    }
                    Some(a) => !matches!(
                        a.str_field("sval").to_lowercase().as_str(),
                        "false" | "off" | "0" | "no"
                    ),
                };
            }
            _ => {}
        }
    }
    copy
}
