//! Masking on the wire: result sets are rewritten row by row as they stream through.
//!
//! The decisions are the policy crate's (`countersign_policy::mask`); this module applies
//! them to PostgreSQL messages:
//! - RowDescription: a masked column is reported as `text` (unless its style is `null`), so a
//!   client decodes the mask in text and binary formats alike.
//! - DataRow: masked columns get their style; other columns are scanned by the content
//!   detectors: a text-typed value (and, in text format, any value) keeps its shape with each
//!   match masked; a hit in a value whose type is not text-like becomes NULL, so the client's
//!   type decoding never breaks. Lengths are recomputed.
//! - ErrorResponse and NoticeResponse of statements touching masked relations: the texts
//!   (message, detail, hint, context, query) are withheld; SQLSTATE and position stay.
//!
//! One row is held at a time; nothing buffers a whole result. Sessions without mask rules
//! never come here.
//!
//! Not handled here: rows of an extended-protocol Execute arrive without a RowDescription, so
//! the client half sends a Describe of the portal ahead of each Execute (see `inspect`) and
//! the answer, swallowed, sets up the masker. `COPY ... TO STDOUT` touching a relation with
//! masked columns is refused by the policy decision instead of being rewritten.

pub mod catalog;
pub mod copy;

use super::relay::Shared;
use super::track::StatementInfo;
use super::wire::Frame;
use super::wire::backend::{self, BackendMessage, DataRowValues, FieldDescription};
use super::wire::writer::{Unrepresentable, put_count16, put_nullable, write_message};
use bytes::{BufMut, Bytes, BytesMut};
use countersign_policy::Policy;
use countersign_policy::mask::{Catalog, Field, MaskIndex, StatementMask, Style};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// `text`: what masked columns are reported as.
const TEXT_OID: u32 = 25;
/// What the client is told instead of a withheld error or notice text.
const WITHHELD: &str =
    "countersign: message withheld: the statement touches columns masked for this session";

/// Types whose binary form is their text (UTF-8 bytes), so detectors can read them.
fn binary_is_text(type_oid: u32) -> bool {
    // text, varchar, bpchar, name, char, json, unknown, xml
    matches!(type_oid, 25 | 1043 | 1042 | 19 | 18 | 114 | 705 | 142)
}

/// Types whose text form may carry detected content in place (strings, JSON, arrays of them).
fn text_like(type_oid: u32) -> bool {
    binary_is_text(type_oid) || matches!(type_oid, 3802 | 1009 | 1015 | 199 | 3807 | 1014)
}

/// A session's masking state, shared by its two halves.
#[derive(Default)]
pub struct MaskState {
    /// The policy the index was built from (compared by pointer).
    policy: Option<Arc<Policy>>,
    catalog: Option<Arc<Catalog>>,
    /// When the catalog was taken: past `catalog::TTL`, it is taken again.
    catalog_at: Option<std::time::Instant>,
    index: Option<Arc<MaskIndex>>,
    /// Cursors declared over masked values, and the rule.
    cursors: HashMap<String, usize>,
}

/// Brings the session's masking up to date with the current policy (and, with `reload`, a
/// freshly read catalog). Errors mean masking cannot be guaranteed: the caller fails closed.
pub async fn refresh(shared: &Shared, reload: bool) -> Result<(), String> {
    let (policy, environment) = {
        let config = shared.config.borrow();
        match config.as_ref() {
            Some(c) => (
                c.policy.clone(),
                c.resources
                    .get(&*shared.resource)
                    .map(|r| r.environment.clone())
                    .unwrap_or_default(),
            ),
            None => return Ok(()),
        }
    };
    let cached = {
        let state = shared.mask.lock().map_err(|_| "masking state poisoned")?;
        let fresh = state
            .catalog_at
            .is_none_or(|at| at.elapsed() < catalog::TTL);
        if !reload
            && fresh
            && state
                .policy
                .as_ref()
                .is_some_and(|p| Arc::ptr_eq(p, &policy))
        {
            return Ok(());
        }
        state.catalog.clone().filter(|_| fresh)
    };
    let masking = policy.masking(
        &shared.resource,
        &environment,
        shared.access_level.as_deref(),
    );
    if masking.is_empty() {
        let mut state = shared.mask.lock().map_err(|_| "masking state poisoned")?;
        state.policy = Some(policy);
        state.index = None;
        shared.mask_active.store(false, Ordering::Release);
        return Ok(());
    }
    let catalog = match cached {
        Some(c) if !reload => c,
        _ => shared.catalogs.get(&shared.mask_source, reload).await?,
    };
    let index = Arc::new(MaskIndex::new(masking, &catalog, &shared.mask_key));
    let mut state = shared.mask.lock().map_err(|_| "masking state poisoned")?;
    state.policy = Some(policy);
    state.catalog = Some(catalog);
    state.catalog_at = Some(std::time::Instant::now());
    state.index = Some(index);
    shared.mask_active.store(true, Ordering::Release);
    Ok(())
}

/// The session's current index, if it has mask rules.
pub fn current_index(shared: &Shared) -> Option<Arc<MaskIndex>> {
    shared.mask.lock().ok()?.index.clone()
}

/// Whether the policy changed since the session's masking was built, or its catalog is
/// older than `catalog::TTL` (DDL by other sessions shows within that time).
pub fn stale(shared: &Shared) -> bool {
    let config = shared.config.borrow();
    let Some(c) = config.as_ref() else {
        return false;
    };
    shared.mask.lock().map_or(true, |s| {
        !s.policy.as_ref().is_some_and(|p| Arc::ptr_eq(p, &c.policy))
            || s.catalog_at.is_some_and(|at| at.elapsed() >= catalog::TTL)
    })
}

/// The masking of `stmt` (and of the prepared statements it `EXECUTE`s), or `None` when the
/// session has no mask rules. Remembers cursors declared over masked values.
pub fn statement_ctx(shared: &Shared, stmts: &[&StatementInfo]) -> Option<Arc<MaskCtx>> {
    let mut state = shared.mask.lock().ok()?;
    let index = state.index.clone()?;
    let mut verdict = StatementMask::default();
    for stmt in stmts {
        let facts = std::iter::once(&stmt.facts).chain(stmt.alternative.as_ref());
        for f in facts {
            let cursors = &state.cursors;
            let v = index.statement(f, &|name| cursors.get(name).copied());
            verdict.tainted = verdict.tainted.or(v.tainted);
            verdict.all_fields = verdict.all_fields.or(v.all_fields);
            verdict.withhold_messages |= v.withhold_messages;
            if verdict.copy.is_none() {
                verdict.copy = v.copy;
            }
            if verdict.refuse.is_none() {
                verdict.refuse = v.refuse;
            }
        }
    }
    // A prepared statement's masked value written by the statement executing it.
    if verdict.refuse.is_none()
        && let Some(rule) = verdict.tainted
        && stmts.first().is_some_and(|s| {
            s.facts
                .statements
                .iter()
                .any(countersign_policy::mask::writes)
        })
    {
        verdict.refuse = Some(index.write_refusal(rule));
    }
    if let Some(rule) = verdict.tainted.or(verdict.all_fields) {
        for stmt in stmts {
            for s in &stmt.facts.statements {
                if let Some(name) = &s.columns.declares_cursor {
                    state.cursors.insert(name.clone(), rule);
                }
            }
        }
    }
    Some(Arc::new(MaskCtx {
        index,
        stmt: verdict,
    }))
}

/// A statement's masking: the session's index at the time, and the verdict.
#[derive(Debug)]
pub struct MaskCtx {
    pub index: Arc<MaskIndex>,
    pub stmt: StatementMask,
}

/// Values masked so far, by rule and by detector: what audit records (never the values).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaskStats {
    pub by_rule: BTreeMap<String, u64>,
    pub by_detector: BTreeMap<&'static str, u64>,
}

impl MaskStats {
    pub fn is_empty(&self) -> bool {
        self.by_rule.is_empty() && self.by_detector.is_empty()
    }

    pub fn take(&mut self) -> MaskStats {
        std::mem::take(self)
    }

    pub(crate) fn rule(&mut self, name: &str) {
        // Counted once per masked value: no allocation but the first time.
        match self.by_rule.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.by_rule.insert(name.to_owned(), 1);
            }
        }
    }
}

struct Column {
    /// The style and rule name masking the whole column.
    mask: Option<(Style, Arc<str>)>,
    type_oid: u32,
    binary: bool,
}

/// Masks the rows of one result set.
pub struct RowMasker {
    ctx: Arc<MaskCtx>,
    columns: Vec<Column>,
    detect: bool,
    /// No column masked and no detectors: rows pass untouched.
    noop: bool,
}

impl RowMasker {
    /// A masker for the result `fields` describe, and the RowDescription to send instead
    /// (`None`: forward as received).
    pub fn new(ctx: Arc<MaskCtx>, fields: &[FieldDescription<'_>]) -> (RowMasker, Option<Bytes>) {
        let view: Vec<Field<'_>> = fields
            .iter()
            .map(|f| Field {
                name: f.name,
                table_oid: f.table_oid,
                column: f.column_id,
            })
            .collect();
        let rules = ctx.index.fields(&ctx.stmt, &view);
        let mut rewritten = false;
        let mut out_fields = fields.to_vec();
        let mut columns = Vec::with_capacity(fields.len());
        for (i, f) in fields.iter().enumerate() {
            let rule = rules
                .get(i)
                .copied()
                .flatten()
                .and_then(|r| ctx.index.rule(r));
            let mask = rule.map(|r| (r.style, Arc::<str>::from(r.name.as_str())));
            if let (Some((style, _)), Some(out)) = (&mask, out_fields.get_mut(i))
                && *style != Style::Null
                && out.type_oid != TEXT_OID
            {
                out.type_oid = TEXT_OID;
                out.type_size = -1;
                out.type_modifier = -1;
                rewritten = true;
            }
            columns.push(Column {
                mask,
                type_oid: f.type_oid,
                binary: f.format == 1,
            });
        }
        let detect = !ctx.index.detectors().is_empty();
        let noop = !detect && columns.iter().all(|c| c.mask.is_none());
        let replacement = rewritten.then(|| {
            let mut out = BytesMut::new();
            backend::encode_row_description(&out_fields, &mut out);
            out.freeze()
        });
        (
            RowMasker {
                ctx,
                columns,
                detect,
                noop,
            },
            replacement,
        )
    }

    /// Whether rows pass through untouched.
    pub fn is_noop(&self) -> bool {
        self.noop
    }

    /// Writes the DataRow to send instead of `frame` at the end of `out` and returns true, or
    /// returns false, `out` untouched, to forward `frame` as received. A row that does not
    /// parse, or does not match the description, is written with every column NULL (fail
    /// closed). The row is rewritten in place of its columns: nothing is allocated per row.
    pub fn row(&self, frame: &Frame, stats: &mut MaskStats, out: &mut BytesMut) -> bool {
        if self.is_noop() {
            return false;
        }
        let values = match DataRowValues::checked(frame.body()) {
            Ok(v) if v.len() == self.columns.len() => v,
            _ => {
                put_all_null(self.columns.len(), out);
                return true;
            }
        };
        let key = self.ctx.index.key();
        let start = out.len();
        let mut changed = false;
        // The new row is written as we go. One that masking grew past what a message's
        // lengths hold (a hash is longer than a short match) is not written at all.
        write_message(out, Some(b'D'), |o| {
            put_count16(o, self.columns.len())?;
            for (value, col) in values.zip(&self.columns) {
                // Checked above: every value reads.
                let Ok(Some(value)) = value else {
                    put_nullable(o, None)?;
                    continue;
                };
                if let Some((style, rule)) = &col.mask {
                    stats.rule(rule);
                    changed = true;
                    let style = if col.binary && !binary_is_text(col.type_oid) {
                        // Binary bytes of another type are no text to keep a tail of.
                        match style {
                            Style::Null | Style::Hash => *style,
                            _ => Style::Redact,
                        }
                    } else {
                        *style
                    };
                    match style.mask(key, value) {
                        Some(masked) => {
                            o.put_i32(i32::try_from(masked.len()).map_err(|_| Unrepresentable)?);
                            for part in masked.parts() {
                                o.put_slice(part);
                            }
                        }
                        None => put_nullable(o, None)?,
                    }
                    continue;
                }
                if self.detect
                    && (!col.binary || binary_is_text(col.type_oid))
                    && let Some(masked) =
                        mask_detected(&self.ctx.index, value, text_like(col.type_oid), stats)
                {
                    changed = true;
                    put_nullable(o, masked.as_deref())?;
                    continue;
                }
                put_nullable(o, Some(value))?;
            }
            Ok(())
        });
        if out.len() == start {
            // Not written: every column NULL, never a clamped length.
            put_all_null(self.columns.len(), out);
            return true;
        }
        if !changed {
            out.truncate(start);
            return false;
        }
        true
    }
}

/// The content detectors over one value: `None` when they find nothing; otherwise the value
/// with each match masked in its rule's style, or NULL (`Some(None)`) when a match's style is
/// `null` or the value may not keep its shape (`keep_shape` false: a type that is not
/// text-like). Every match is counted in `stats`.
pub(super) fn mask_detected(
    index: &MaskIndex,
    value: &[u8],
    keep_shape: bool,
    stats: &mut MaskStats,
) -> Option<Option<Vec<u8>>> {
    let detectors = index.detectors();
    if detectors.is_empty() || !detectors.may_match(value) {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let found = detectors.find(text);
    if found.is_empty() {
        return None;
    }
    let key = index.key();
    let mut out = Vec::with_capacity(value.len());
    let mut at = 0;
    let mut null = !keep_shape;
    for (detector, range) in &found {
        *stats.by_detector.entry(detector.name()).or_default() += 1;
        let style = index
            .detector_rule(*detector)
            .and_then(|r| index.rule(r))
            .map_or(Style::Redact, |r| r.style);
        null |= style == Style::Null;
        out.extend_from_slice(text.get(at..range.start).unwrap_or("").as_bytes());
        let hit = text.get(range.clone()).unwrap_or("");
        out.extend_from_slice(&style.apply(key, hit.as_bytes()).unwrap_or_default());
        at = range.end;
    }
    out.extend_from_slice(text.get(at..).unwrap_or("").as_bytes());
    Some((!null).then_some(out))
}

/// `frame` (a DataRow) with every column NULL, at the end of `out`; an empty row when it does
/// not parse.
pub fn null_row(frame: &Frame, out: &mut BytesMut) {
    let n = DataRowValues::checked(frame.body()).map_or(0, |v| v.len());
    put_all_null(n, out);
}

/// A DataRow of `n` NULL columns, at the end of `out`: the fail-closed replacement of a row.
fn put_all_null(n: usize, out: &mut BytesMut) {
    backend::encode_data_row(&vec![None; n], out);
}

/// An ErrorResponse or NoticeResponse with its texts withheld: severity, SQLSTATE and
/// position are kept.
pub fn withhold(frame: &Frame) -> Bytes {
    let fields = match BackendMessage::parse(frame) {
        Ok(BackendMessage::ErrorResponse(f) | BackendMessage::NoticeResponse(f)) => f,
        _ => {
            let mut out = BytesMut::new();
            backend::encode_error(
                &backend::ErrorNotice {
                    severity: backend::Severity::Error,
                    code: "XX000",
                    message: WITHHELD,
                    detail: None,
                    hint: None,
                },
                &mut out,
            );
            return out.freeze();
        }
    };
    let mut body = BytesMut::new();
    let mut wrote_message = false;
    for (code, value) in fields.fields() {
        let value: &str = match code {
            b'S' | b'V' | b'C' | b'P' | b'F' | b'L' | b'R' => value,
            b'M' => {
                wrote_message = true;
                WITHHELD
            }
            // Detail, hint, context, internal query and position, schema/table/column/
            // constraint names and anything unknown: dropped.
            _ => continue,
        };
        body.put_u8(*code);
        body.extend_from_slice(value.as_bytes());
        body.put_u8(0);
    }
    if !wrote_message {
        body.put_u8(b'M');
        body.extend_from_slice(WITHHELD.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(frame.tag);
    out.put_i32(i32::try_from(body.len() + 4).unwrap_or(i32::MAX));
    out.extend_from_slice(&body);
    out.freeze()
}

/// Withheld error text, as audit records it.
pub fn withheld_text(code: &str) -> String {
    format!("{code}: {WITHHELD}")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::pg::wire::decode_frame;
    use countersign_policy::mask::{CatalogRelation, RelationKind};

    /// The index of `policy` over one table, `public.t (id, secret, note)` with oid 1: the
    /// masking tests' catalog.
    pub(super) fn index_over_t(policy: &str) -> Arc<MaskIndex> {
        let policy = Policy::parse(policy).unwrap();
        let catalog = Catalog {
            relations: vec![CatalogRelation {
                oid: 1,
                schema: "public".into(),
                name: "t".into(),
                kind: RelationKind::Table,
                columns: vec![(1, "id".into()), (2, "secret".into()), (3, "note".into())],
                definition: None,
            }],
            functions: vec![],
        };
        Arc::new(MaskIndex::new(
            policy.masking("r", "e", None),
            &catalog,
            b"k",
        ))
    }

    /// A masker for `SELECT id, secret, note FROM t`: `secret` hashed, emails detected.
    fn masker() -> RowMasker {
        let index = index_over_t(
            r#"
[[mask]]
name = "m"
columns = ["public.t.secret"]
style = "hash"
[[mask]]
name = "d"
detect = ["email"]
"#,
        );
        let ctx = Arc::new(MaskCtx {
            index,
            stmt: StatementMask::default(),
        });
        let field = |name, column, type_oid| FieldDescription {
            name,
            table_oid: 1,
            column_id: column,
            type_oid,
            type_size: -1,
            type_modifier: -1,
            format: 0,
        };
        let fields = [
            field("id", 1, 23),
            field("secret", 2, 25),
            field("note", 3, 25),
        ];
        let (masker, replacement) = RowMasker::new(ctx, &fields);
        // `secret` is text already: the description goes out as received.
        assert!(replacement.is_none());
        masker
    }

    fn data_row(values: &[Option<&[u8]>]) -> Frame {
        let mut buf = BytesMut::new();
        backend::encode_data_row(values, &mut buf);
        decode_frame(&mut buf, 1 << 20).unwrap().unwrap()
    }

    fn columns(frame: &Frame) -> Vec<Option<Vec<u8>>> {
        DataRowValues::new(frame.body())
            .unwrap()
            .map(|v| v.unwrap().map(<[u8]>::to_vec))
            .collect()
    }

    #[test]
    fn rows_are_rewritten_after_what_the_buffer_holds() {
        let m = masker();
        let mut stats = MaskStats::default();
        let mut out = BytesMut::from(&b"prior"[..]);
        // A masked column and a detected email: rewritten, appended.
        let row = data_row(&[Some(b"1"), Some(b"topsecret"), Some(b"mail a@b.io now")]);
        assert!(m.row(&row, &mut stats, &mut out));
        // Nothing to mask (the masked column is NULL): forwarded, the buffer untouched.
        let clean = data_row(&[Some(b"2"), None, Some(b"plain")]);
        let before = out.len();
        assert!(!m.row(&clean, &mut stats, &mut out));
        assert_eq!(out.len(), before);
        // Malformed (a length past the end), and short of a column: every column NULL, as
        // many as the description has.
        let mut bad = data_row(&[Some(b"3"), Some(b"x"), Some(b"y")]);
        let mut raw = BytesMut::from(&bad.bytes[..]);
        raw[7..11].copy_from_slice(&100i32.to_be_bytes());
        bad.bytes = raw.freeze();
        assert!(m.row(&bad, &mut stats, &mut out));
        assert!(m.row(&data_row(&[Some(b"4"), Some(b"s")]), &mut stats, &mut out));

        assert_eq!(&out[..5], b"prior");
        let mut rest = out.split_off(5);
        let first = decode_frame(&mut rest, 1 << 20).unwrap().unwrap();
        let got = columns(&first);
        assert_eq!(got[0].as_deref(), Some(&b"1"[..]));
        let hash = got[1].clone().unwrap();
        assert!(hash.starts_with(b"h:") && hash.len() == 26, "{hash:?}");
        assert_eq!(got[2].as_deref(), Some(&b"mail **** now"[..]));
        for n in [3, 3] {
            let nulls = decode_frame(&mut rest, 1 << 20).unwrap().unwrap();
            assert_eq!(columns(&nulls), vec![None; n]);
        }
        assert!(rest.is_empty());
        assert_eq!(stats.by_rule.get("m"), Some(&1));
        assert_eq!(stats.by_detector.get("email"), Some(&1));
    }

    #[test]
    fn null_rows_match_the_row_they_replace() {
        let mut out = BytesMut::new();
        null_row(&data_row(&[Some(b"a"), None, Some(b"c")]), &mut out);
        let mut garbage = data_row(&[Some(b"a")]);
        garbage.bytes = Bytes::from_static(b"D\0\0\0\x07\0\x05x");
        null_row(&garbage, &mut out);
        let three = decode_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(columns(&three), vec![None; 3]);
        let empty = decode_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(columns(&empty), Vec::<Option<Vec<u8>>>::new());
        // A readable count but a value running past the end: not a row of that many NULLs.
        let mut short = data_row(&[Some(b"a"), Some(b"b"), Some(b"c")]);
        let mut raw = BytesMut::from(&short.bytes[..]);
        raw[7..11].copy_from_slice(&100i32.to_be_bytes());
        short.bytes = raw.freeze();
        null_row(&short, &mut out);
        let empty = decode_frame(&mut out, 1 << 20).unwrap().unwrap();
        assert_eq!(columns(&empty), Vec::<Option<Vec<u8>>>::new());
    }
}
