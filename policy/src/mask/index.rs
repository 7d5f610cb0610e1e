//! The masking plan of one session: rules joined with the upstream's catalog, and the
//! per-statement and per-column decisions (see the parent module for what is guaranteed).

use std::collections::{HashMap, HashSet};

use super::detect::{Detector, Detectors};
use super::style::MaskKey;
use super::{MaskRule, Masking};
use crate::facts::{CopyOptions, Statement, StatementFacts, StatementKind};

/// Built-in functions that carry a value out of the statement into session or server state
/// (settings, notifications, large objects): with a masked value, refused like a write.
const STATE_FUNCTIONS: &[&str] = &[
    "set_config",
    "pg_notify",
    "lo_from_bytea",
    "lo_put",
    "lowrite",
    "pg_logical_emit_message",
];

/// How many rounds views over views are followed.
const VIEW_ROUNDS: usize = 8;

/// Whether a statement writes: to a relation, through code, or into session or server
/// state.
pub fn writes(st: &Statement) -> bool {
    !st.tables_written.is_empty()
        || matches!(st.kind, StatementKind::Do | StatementKind::Call)
        || STATE_FUNCTIONS.iter().any(|f| st.calls(f))
}

/// What the gateway reads from the upstream's catalog.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub relations: Vec<CatalogRelation>,
    /// Functions outside `pg_catalog` and `information_schema`, by name (lower case).
    pub functions: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelationKind {
    /// Tables, partitioned tables, foreign tables.
    Table,
    /// Views and materialized views.
    View,
}

#[derive(Clone, Debug)]
pub struct CatalogRelation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub kind: RelationKind,
    /// `(attnum, name)` of each live column.
    pub columns: Vec<(i16, String)>,
    /// A view's definition (`pg_get_viewdef`).
    pub definition: Option<String>,
}

/// An output column as a RowDescription describes it.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a> {
    pub name: &'a str,
    /// 0 when the column is not a plain reference to a table or view column.
    pub table_oid: u32,
    pub column: i16,
}

/// The verdict on one statement. Rule numbers index [`MaskIndex::rule`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatementMask {
    /// A masked column, or a whole row or `*` of a relation holding one, is used as a value:
    /// output columns without a known origin are masked under this rule.
    pub tainted: Option<usize>,
    /// Every output column is masked under this rule.
    pub all_fields: Option<usize>,
    /// Error and notice texts are withheld: the statement touches a relation with masked
    /// columns, or cannot be seen through.
    pub withhold_messages: bool,
    /// The statement must not run: the rule and why.
    pub refuse: Option<(usize, String)>,
    /// A `COPY ... TO`: how its rows are laid out and which columns are masked.
    pub copy: Option<CopyMask>,
}

/// The layout of a `COPY ... TO` stream and the masking of its columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyMask {
    pub format: CopyFormat,
    pub delimiter: u8,
    /// How NULL is written (text and CSV).
    pub null: Vec<u8>,
    pub quote: u8,
    pub escape: u8,
    /// The first row is a header line (CSV).
    pub header: bool,
    /// Every column is masked under this rule.
    pub all: Option<usize>,
    /// The rule masking each column, in order, when `all` is `None`.
    pub columns: Vec<Option<usize>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyFormat {
    Text,
    Csv,
    Binary,
}

impl StatementMask {
    /// Whether the statement needs anything beyond per-column origins and detectors.
    pub fn is_clean(&self) -> bool {
        *self == StatementMask::default()
    }
}

/// Rules and catalog, joined. Built once per catalog load and policy version.
#[derive(Debug)]
pub struct MaskIndex {
    masking: Masking,
    key: MaskKey,
    attrs: HashMap<(u32, i16), usize>,
    /// Relations holding a masked column: the first such column's rule.
    relation_rule: HashMap<u32, usize>,
    /// Each relation's columns in order, by name; `None` when several schemas hold a
    /// relation of that name.
    relation_columns: HashMap<String, Option<Vec<String>>>,
    known: HashSet<u32>,
    /// Relation name → its masked columns and their rules.
    by_relation: HashMap<String, Vec<(String, usize)>>,
    user_functions: HashSet<String>,
    names: Vec<(usize, crate::rules::Glob)>,
    detectors: Detectors,
    detector_rules: Vec<(Detector, usize)>,
    strict: Option<usize>,
}

impl MaskIndex {
    /// Joins `masking` with `catalog`. `key` keys the `hash` style.
    pub fn new(masking: Masking, catalog: &Catalog, key: &[u8]) -> MaskIndex {
        let mut attrs = HashMap::new();
        let mut by_relation: HashMap<String, Vec<(String, usize)>> = HashMap::new();
        let mut known = HashSet::new();
        for rel in &catalog.relations {
            known.insert(rel.oid);
            if rel.kind != RelationKind::Table {
                continue;
            }
            for (attnum, column) in &rel.columns {
                let path = format!("{}.{}.{}", rel.schema, rel.name, column);
                let rule = masking
                    .rules
                    .iter()
                    .position(|r| r.columns.iter().any(|g| g.matches(&path)));
                if let Some(rule) = rule {
                    attrs.insert((rel.oid, *attnum), rule);
                    by_relation
                        .entry(rel.name.clone())
                        .or_default()
                        .push((column.clone(), rule));
                }
            }
        }
        let mut index = MaskIndex {
            names: masking
                .rules
                .iter()
                .enumerate()
                .flat_map(|(i, r)| r.names.iter().map(move |g| (i, g.clone())))
                .collect(),
            detector_rules: {
                let mut out: Vec<(Detector, usize)> = Vec::new();
                for (i, r) in masking.rules.iter().enumerate() {
                    for d in &r.detect {
                        if !out.iter().any(|(seen, _)| seen == d) {
                            out.push((*d, i));
                        }
                    }
                }
                out
            },
            detectors: Detectors::new(&[]),
            strict: masking.rules.iter().position(|r| r.strict),
            user_functions: catalog.functions.iter().map(|f| f.to_lowercase()).collect(),
            masking,
            key: MaskKey::new(key),
            attrs,
            relation_rule: HashMap::new(),
            relation_columns: {
                let mut out: HashMap<String, Option<Vec<String>>> = HashMap::new();
                for rel in &catalog.relations {
                    let mut columns = rel.columns.clone();
                    columns.sort_by_key(|(attnum, _)| *attnum);
                    let names = columns.into_iter().map(|(_, n)| n).collect();
                    out.entry(rel.name.clone())
                        .and_modify(|e| *e = None)
                        .or_insert(Some(names));
                }
                out
            },
            known,
            by_relation,
        };
        let enabled: Vec<Detector> = index.detector_rules.iter().map(|(d, _)| *d).collect();
        index.detectors = Detectors::new(&enabled);
        index.mask_views(catalog);
        for ((oid, _), rule) in &index.attrs {
            let entry = index.relation_rule.entry(*oid).or_insert(*rule);
            *entry = (*entry).min(*rule);
        }
        index
    }

    /// A view column is masked when the view's definition uses a masked column (or a masked
    /// relation's whole row or `*`) as a value: then all its columns are, under that rule.
    /// Views over views are followed for a few rounds; a definition that does not parse masks
    /// the whole view when it reads a relation with masked columns.
    fn mask_views(&mut self, catalog: &Catalog) {
        let views: Vec<(&CatalogRelation, StatementFacts)> = catalog
            .relations
            .iter()
            .filter(|r| r.kind == RelationKind::View)
            .filter_map(|r| {
                let def = r.definition.as_deref()?;
                Some((r, crate::facts::classify(def)))
            })
            .collect();
        let mut done: HashSet<u32> = HashSet::new();
        for _ in 0..VIEW_ROUNDS {
            let mut changed = false;
            for (view, facts) in &views {
                if done.contains(&view.oid) {
                    continue;
                }
                let verdict = self.statement(facts, &|_| None);
                let rule = verdict.tainted.or(verdict.all_fields).or_else(|| {
                    (facts.parse_error.is_some() && verdict.withhold_messages)
                        .then(|| self.first_rule_of(facts))
                        .flatten()
                });
                if let Some(rule) = rule {
                    for (attnum, column) in &view.columns {
                        self.attrs.insert((view.oid, *attnum), rule);
                        self.by_relation
                            .entry(view.name.clone())
                            .or_default()
                            .push((column.clone(), rule));
                    }
                    done.insert(view.oid);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn first_rule_of(&self, facts: &StatementFacts) -> Option<usize> {
        facts.statements.iter().find_map(|s| {
            s.tables_read
                .iter()
                .chain(&s.tables_written)
                .find_map(|t| self.by_relation.get(&t.name))
                .and_then(|cols| cols.first().map(|(_, r)| *r))
        })
    }

    pub fn rule(&self, index: usize) -> Option<&MaskRule> {
        self.masking.rules.get(index)
    }

    pub fn masking(&self) -> &Masking {
        &self.masking
    }

    pub fn key(&self) -> &MaskKey {
        &self.key
    }

    /// Whether the catalog this index was built from knows relation `oid`.
    pub fn knows(&self, oid: u32) -> bool {
        self.known.contains(&oid)
    }

    pub fn detectors(&self) -> &Detectors {
        &self.detectors
    }

    /// The rule that enabled detector `d`.
    pub fn detector_rule(&self, d: Detector) -> Option<usize> {
        self.detector_rules
            .iter()
            .find(|(seen, _)| *seen == d)
            .map(|(_, r)| *r)
    }

    /// Whether some rule masks by column or by name (otherwise only detectors can apply).
    pub fn masks_columns(&self) -> bool {
        !self.attrs.is_empty() || !self.names.is_empty()
    }

    /// The verdict on a statement. `cursor` says whether a cursor of this session was
    /// declared over masked values, and under which rule.
    pub fn statement(
        &self,
        facts: &StatementFacts,
        cursor: &dyn Fn(&str) -> Option<usize>,
    ) -> StatementMask {
        let mut out = StatementMask::default();
        if facts.parse_error.is_some() {
            out.withhold_messages = true;
            if let Some(strict) = self.strict {
                out.all_fields = Some(strict);
            }
            return out;
        }
        for st in &facts.statements {
            self.one(st, cursor, &mut out);
        }
        // One message may prepare a masked value in one statement and write it in another
        // (`PREPARE p AS SELECT email ...; CREATE TABLE t AS EXECUTE p`).
        if out.refuse.is_none()
            && let Some(rule) = out.tainted
            && facts.statements.iter().any(writes)
        {
            out.refuse = Some(self.write_refusal(rule));
        }
        out
    }

    fn one(&self, st: &Statement, cursor: &dyn Fn(&str) -> Option<usize>, out: &mut StatementMask) {
        let refs = &st.columns;
        // Relations with masked columns, by name and alias.
        let mut holders: Vec<(&str, &Vec<(String, usize)>)> = Vec::new();
        for t in st.tables_read.iter().chain(&st.tables_written) {
            if let Some(cols) = self.by_relation.get(&t.name) {
                holders.push((t.name.as_str(), cols));
            }
        }
        for (alias, rel) in &refs.aliases {
            if let Some(cols) = self.by_relation.get(rel) {
                holders.push((alias.as_str(), cols));
            }
        }
        let first_rule = holders
            .first()
            .and_then(|(_, cols)| cols.first())
            .map(|(_, r)| *r);
        let mut tainted = holders.iter().find_map(|(_, cols)| {
            cols.iter()
                .find(|(column, _)| refs.uses(column, false))
                .map(|(_, r)| *r)
        });
        if tainted.is_none() {
            // `*`, `t.*`, or the row `t` itself (`to_jsonb(t)`) of a holder.
            let whole = refs.stars.iter().any(|q| q.is_empty())
                || holders.iter().any(|(name, _)| {
                    refs.stars.iter().any(|q| q == name) || refs.uses(name, false)
                });
            if whole {
                tainted = first_rule;
            }
        }
        if tainted.is_none()
            && let Some(name) = &refs.fetches_cursor
        {
            tainted = cursor(name);
        }
        if !holders.is_empty() || tainted.is_some() {
            out.withhold_messages = true;
        }
        // COPY TO streams rows without a RowDescription: the plan says which columns to mask.
        if let Some(copy) = refs.copy.as_ref().filter(|c| c.to) {
            out.copy = Some(self.copy_plan(copy, tainted));
        }
        let unprovable = st.opaque
            || matches!(st.kind, StatementKind::Do | StatementKind::Call)
            || st.functions.iter().any(|f| {
                let last = f.rsplit('.').next().unwrap_or(f);
                !f.starts_with("pg_catalog.") && self.user_functions.contains(last)
            });
        if unprovable {
            // What it runs is out of sight, and notices are how it would talk.
            out.withhold_messages = true;
            if let Some(strict) = self.strict {
                out.all_fields = out.all_fields.or(Some(strict));
            }
        }
        let Some(rule) = tainted else {
            return;
        };
        out.tainted = out.tainted.or(Some(rule));
        if refs.set_operation || refs.returning {
            out.all_fields = out.all_fields.or(Some(rule));
        }
        if writes(st) && out.refuse.is_none() {
            out.refuse = Some(self.write_refusal(rule));
        }
    }

    /// The refusal of a statement that would write values masked under `rule`.
    pub fn write_refusal(&self, rule: usize) -> (usize, String) {
        let name = self.rule(rule).map_or("", |r| r.name.as_str());
        (
            rule,
            format!(
                "the statement would write values of columns masked by rule {name:?}; \
                 masked sessions can only read them"
            ),
        )
    }

    /// The plan of a `COPY ... TO`. Columns of a copied relation are decided by name (its
    /// masked columns, and `names` rules); a copied query has every column masked when it is
    /// tainted, or when any `names` rule exists (its column names are not known here); so
    /// has a relation the catalog does not know unambiguously, when it holds masked columns.
    fn copy_plan(&self, copy: &CopyOptions, tainted: Option<usize>) -> CopyMask {
        let format = match copy.format.as_str() {
            "csv" => CopyFormat::Csv,
            "binary" => CopyFormat::Binary,
            _ => CopyFormat::Text,
        };
        let byte = |v: &Option<String>, default: u8| {
            v.as_deref()
                .and_then(|s| s.as_bytes().first().copied())
                .unwrap_or(default)
        };
        let delimiter = byte(
            &copy.delimiter,
            if format == CopyFormat::Csv {
                b','
            } else {
                b'\t'
            },
        );
        let quote = byte(&copy.quote, b'"');
        let escape = byte(&copy.escape, quote);
        let null = copy.null.clone().unwrap_or_else(|| {
            if format == CopyFormat::Csv {
                String::new()
            } else {
                "\\N".to_owned()
            }
        });
        let name_rule = |name: &str| {
            self.names
                .iter()
                .find(|(_, g)| g.matches(name))
                .map(|(r, _)| *r)
        };
        let first_name_rule = self.names.first().map(|(r, _)| *r);
        let (all, columns) = match &copy.relation {
            None => (tainted.or(first_name_rule), Vec::new()),
            Some(rel) => {
                let masked = self.by_relation.get(rel);
                let names = if copy.columns.is_empty() {
                    self.relation_columns.get(rel).cloned().flatten()
                } else {
                    Some(copy.columns.clone())
                };
                match names {
                    Some(names) => (
                        None,
                        names
                            .iter()
                            .map(|n| {
                                masked
                                    .and_then(|m| m.iter().find(|(c, _)| c == n))
                                    .map(|(_, r)| *r)
                                    .or_else(|| name_rule(n))
                            })
                            .collect(),
                    ),
                    None => (
                        masked
                            .and_then(|m| m.first())
                            .map(|(_, r)| *r)
                            .or(first_name_rule),
                        Vec::new(),
                    ),
                }
            }
        };
        CopyMask {
            format,
            delimiter,
            null: null.into_bytes(),
            quote,
            escape,
            header: copy.header,
            all,
            columns,
        }
    }

    /// The rule masking each output column of a result, if any (detectors aside).
    /// Columns from relations the catalog does not know are masked when the statement is
    /// tainted or the session is strict: reload the catalog first to avoid that.
    pub fn fields(&self, st: &StatementMask, fields: &[Field<'_>]) -> Vec<Option<usize>> {
        fields
            .iter()
            .map(|f| {
                if let Some(rule) = st.all_fields {
                    return Some(rule);
                }
                if let Some((rule, _)) = self.names.iter().find(|(_, g)| g.matches(f.name)) {
                    return Some(*rule);
                }
                if f.table_oid == 0 {
                    return st.tainted;
                }
                if f.column <= 0 {
                    // A whole row (`SELECT c FROM customers c`) reports its relation with
                    // column 0: masked when the relation holds a masked column.
                    return self.relation_rule.get(&f.table_oid).copied().or(st.tainted);
                }
                if let Some(rule) = self.attrs.get(&(f.table_oid, f.column)) {
                    return Some(*rule);
                }
                if !self.known.contains(&f.table_oid) {
                    return st.tainted.or(self.strict);
                }
                None
            })
            .collect()
    }
}
