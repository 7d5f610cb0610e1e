//! Masking `COPY ... TO STDOUT` streams: each CopyData row is split into its fields (text,
//! CSV or binary, as the statement's options say), masked fields get their style, other
//! fields are scanned by the detectors, and the row is written again in the same format.
//!
//! PostgreSQL sends one row per CopyData message (in binary, the file header rides with the
//! first row and the trailer comes alone). A message that does not parse as whole rows is an
//! error: the caller ends the session rather than forward it unmasked.

use super::{MaskStats, mask_detected};
use bytes::{BufMut, Bytes, BytesMut};
use countersign_policy::mask::{CopyFormat, CopyMask, MaskIndex};
use std::sync::Arc;

/// The binary COPY file signature.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

#[derive(Debug, thiserror::Error)]
#[error("a COPY row could not be parsed for masking: {0}")]
pub struct CopyError(&'static str);

/// Masks the rows of one `COPY ... TO` stream.
pub struct CopyMasker {
    index: Arc<MaskIndex>,
    plan: CopyMask,
    /// Rows seen so far (the first may be a header).
    rows: u64,
}

/// A field: `None` is NULL; otherwise its value, unescaped.
type Field = Option<Vec<u8>>;

impl CopyMasker {
    pub fn new(index: Arc<MaskIndex>, plan: CopyMask) -> CopyMasker {
        CopyMasker {
            index,
            plan,
            rows: 0,
        }
    }

    /// The CopyData body to send instead of `data`, or `None` to forward it as received.
    pub fn row(&mut self, data: &[u8], stats: &mut MaskStats) -> Result<Option<Bytes>, CopyError> {
        self.rows += 1;
        match self.plan.format {
            CopyFormat::Text | CopyFormat::Csv if self.rows == 1 && self.plan.header => Ok(None),
            CopyFormat::Text => self.text_row(data, stats),
            CopyFormat::Csv => self.csv_row(data, stats),
            CopyFormat::Binary => self.binary_row(data, stats),
        }
    }

    /// The rule masking column `i`.
    fn rule(&self, i: usize) -> Option<usize> {
        self.plan
            .all
            .or_else(|| self.plan.columns.get(i).copied().flatten())
    }

    /// Masks `fields` in place; `text_like` says whether a detected value may keep its
    /// shape (text and CSV) or must become NULL (binary, where the type is unknown).
    /// Returns whether anything changed.
    fn mask_fields(&self, fields: &mut [Field], text_like: bool, stats: &mut MaskStats) -> bool {
        let key = self.index.key();
        let mut changed = false;
        for (i, field) in fields.iter_mut().enumerate() {
            let Some(value) = field.as_ref() else {
                continue;
            };
            if let Some(rule) = self.rule(i).and_then(|r| self.index.rule(r)) {
                stats.rule(&rule.name);
                *field = rule.style.apply(key, value);
                changed = true;
                continue;
            }
            if let Some(masked) = mask_detected(&self.index, value, text_like, stats) {
                *field = masked;
                changed = true;
            }
        }
        changed
    }

    /// A text or CSV line: fields joined by the delimiter, NULL as the plan's NULL string,
    /// each value written by `value`.
    fn join_line(
        &self,
        fields: &[Field],
        size: usize,
        value: impl Fn(&[u8], &mut BytesMut),
    ) -> Bytes {
        let mut out = BytesMut::with_capacity(size + 16);
        for (n, field) in fields.iter().enumerate() {
            if n > 0 {
                out.put_u8(self.plan.delimiter);
            }
            match field {
                None => out.extend_from_slice(&self.plan.null),
                Some(v) => value(v, &mut out),
            }
        }
        out.put_u8(b'\n');
        out.freeze()
    }

    fn text_row(&self, data: &[u8], stats: &mut MaskStats) -> Result<Option<Bytes>, CopyError> {
        let body = data
            .strip_suffix(b"\n")
            .ok_or(CopyError("no end of line"))?;
        let delimiter = self.plan.delimiter;
        let mut fields: Vec<Field> = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i <= body.len() {
            match body.get(i) {
                Some(b'\\') => i += 2,
                Some(b) if *b != delimiter => i += 1,
                _ => {
                    let raw = body.get(start..i).ok_or(CopyError("bad field bounds"))?;
                    fields.push((raw != self.plan.null.as_slice()).then(|| unescape_text(raw)));
                    start = i + 1;
                    i += 1;
                }
            }
        }
        if !self.mask_fields(&mut fields, true, stats) {
            return Ok(None);
        }
        Ok(Some(self.join_line(&fields, data.len(), |v, out| {
            escape_text(v, delimiter, out)
        })))
    }

    fn csv_row(&self, data: &[u8], stats: &mut MaskStats) -> Result<Option<Bytes>, CopyError> {
        let body = data
            .strip_suffix(b"\n")
            .ok_or(CopyError("no end of line"))?;
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        let (delimiter, quote, escape) = (self.plan.delimiter, self.plan.quote, self.plan.escape);
        let mut fields: Vec<Field> = Vec::new();
        let mut i = 0;
        loop {
            if body.get(i) == Some(&quote) {
                // Quoted: up to the closing quote; `escape quote` is a literal quote.
                let mut value = Vec::new();
                i += 1;
                loop {
                    match body.get(i) {
                        None => return Err(CopyError("unterminated quoted field")),
                        Some(b) if *b == escape && body.get(i + 1) == Some(&quote) => {
                            value.push(quote);
                            i += 2;
                        }
                        Some(b) if *b == quote => {
                            i += 1;
                            break;
                        }
                        Some(b) => {
                            value.push(*b);
                            i += 1;
                        }
                    }
                }
                fields.push(Some(value));
            } else {
                let end = body
                    .get(i..)
                    .and_then(|rest| rest.iter().position(|b| *b == delimiter))
                    .map_or(body.len(), |p| i + p);
                let raw = body.get(i..end).ok_or(CopyError("bad field bounds"))?;
                fields.push((raw != self.plan.null.as_slice()).then(|| raw.to_vec()));
                i = end;
            }
            match body.get(i) {
                None => break,
                Some(b) if *b == delimiter => i += 1,
                Some(_) => return Err(CopyError("text after a quoted field")),
            }
        }
        if !self.mask_fields(&mut fields, true, stats) {
            return Ok(None);
        }
        // Always quoted: a masked value may hold anything.
        Ok(Some(self.join_line(&fields, data.len(), |v, out| {
            out.put_u8(quote);
            for b in v {
                if *b == quote || *b == escape {
                    out.put_u8(escape);
                }
                out.put_u8(*b);
            }
            out.put_u8(quote);
        })))
    }

    fn binary_row(&self, data: &[u8], stats: &mut MaskStats) -> Result<Option<Bytes>, CopyError> {
        let mut at = 0;
        let mut out = BytesMut::with_capacity(data.len() + 16);
        if self.rows == 1 {
            // Signature, flags, header extension length and extension.
            if !data.starts_with(SIGNATURE) {
                return Err(CopyError("no binary COPY signature"));
            }
            let ext = read_u32(data, SIGNATURE.len() + 4)?;
            let header_len =
                SIGNATURE.len() + 8 + usize::try_from(ext).map_err(|_| CopyError("header"))?;
            out.extend_from_slice(data.get(..header_len).ok_or(CopyError("short header"))?);
            at = header_len;
        }
        let mut changed = false;
        while at < data.len() {
            let count = read_i16(data, at)?;
            at += 2;
            if count == -1 {
                out.put_i16(-1);
                continue;
            }
            let count = usize::try_from(count).map_err(|_| CopyError("negative field count"))?;
            let mut fields: Vec<Field> = Vec::with_capacity(count);
            for _ in 0..count {
                let len = read_i32(data, at)?;
                at += 4;
                if len < 0 {
                    fields.push(None);
                    continue;
                }
                let len = usize::try_from(len).map_err(|_| CopyError("field length"))?;
                let value = data.get(at..at + len).ok_or(CopyError("short field"))?;
                fields.push(Some(value.to_vec()));
                at += len;
            }
            changed |= self.mask_fields(&mut fields, false, stats);
            out.put_i16(i16::try_from(fields.len()).map_err(|_| CopyError("too many fields"))?);
            for field in &fields {
                match field {
                    None => out.put_i32(-1),
                    Some(v) => {
                        out.put_i32(
                            i32::try_from(v.len()).map_err(|_| CopyError("field too long"))?,
                        );
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        Ok(changed.then(|| out.freeze()))
    }
}

fn read_u32(data: &[u8], at: usize) -> Result<u32, CopyError> {
    let b = data.get(at..at + 4).ok_or(CopyError("short message"))?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_i32(data: &[u8], at: usize) -> Result<i32, CopyError> {
    read_u32(data, at).map(|v| v as i32)
}

fn read_i16(data: &[u8], at: usize) -> Result<i16, CopyError> {
    let b = data.get(at..at + 2).ok_or(CopyError("short message"))?;
    Ok(i16::from_be_bytes([b[0], b[1]]))
}

/// COPY text-format escapes: `\b \f \n \r \t \v`, octal `\ddd`, hex `\xhh`, and `\c` for any
/// other character `c`.
fn unescape_text(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&next) = raw.get(i + 1) else {
            out.push(b);
            break;
        };
        i += 2;
        match next {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(next - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match raw.get(i).and_then(|d| char::from(*d).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push((v & 0xff) as u8);
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn escape_text(value: &[u8], delimiter: u8, out: &mut BytesMut) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b if b == delimiter => {
                out.put_u8(b'\\');
                out.put_u8(b);
            }
            b => out.put_u8(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(format: CopyFormat, header: bool) -> CopyMasker {
        let index = super::super::tests::index_over_t(
            r#"
[[mask]]
name = "m"
columns = ["public.t.secret"]
[[mask]]
name = "d"
detect = ["email"]
"#,
        );
        let plan = CopyMask {
            format,
            delimiter: if format == CopyFormat::Csv {
                b','
            } else {
                b'\t'
            },
            null: if format == CopyFormat::Csv {
                vec![]
            } else {
                b"\\N".to_vec()
            },
            quote: b'"',
            escape: b'"',
            header,
            all: None,
            columns: vec![None, Some(0), None],
        };
        CopyMasker::new(index, plan)
    }

    #[test]
    fn text_rows_keep_their_shape() {
        let mut m = masker(CopyFormat::Text, false);
        let mut stats = MaskStats::default();
        let out = m
            .row(b"1\tsec\\tret\twrite to a@b.io\\n please\n", &mut stats)
            .unwrap()
            .unwrap();
        assert_eq!(&out[..], b"1\t****\twrite to ****\\n please\n");
        // NULL stays NULL; a clean row is forwarded as is.
        assert!(m.row(b"2\t\\N\tplain\n", &mut stats).unwrap().is_none());
        assert_eq!(stats.by_rule.get("m"), Some(&1));
        assert_eq!(stats.by_detector.get("email"), Some(&1));
        assert!(m.row(b"no newline", &mut stats).is_err());
    }

    #[test]
    fn csv_rows_with_quotes_and_header() {
        let mut m = masker(CopyFormat::Csv, true);
        let mut stats = MaskStats::default();
        assert!(m.row(b"id,secret,note\n", &mut stats).unwrap().is_none());
        let out = m
            .row(b"1,\"x,\"\"y\"\"\",\"line\nbreak\"\n", &mut stats)
            .unwrap()
            .unwrap();
        // Rewritten rows quote every non-NULL field.
        assert_eq!(&out[..], b"\"1\",\"****\",\"line\nbreak\"\n");
        assert!(m.row(b"1,\"open\n", &mut stats).is_err());
    }

    #[test]
    fn binary_rows_with_header_and_trailer() {
        let mut m = masker(CopyFormat::Binary, false);
        let mut stats = MaskStats::default();
        let mut first = SIGNATURE.to_vec();
        first.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        first.extend_from_slice(&3i16.to_be_bytes());
        for v in [&b"\0\0\0\x01"[..], b"topsecret", b"mail a@b.io"] {
            first.extend_from_slice(&(v.len() as i32).to_be_bytes());
            first.extend_from_slice(v);
        }
        let out = m.row(&first, &mut stats).unwrap().unwrap();
        assert!(out.starts_with(SIGNATURE));
        let body = &out[SIGNATURE.len() + 8..];
        assert_eq!(&body[..2], &3i16.to_be_bytes());
        // secret → "****"; the detected note → NULL (the type is unknown in binary).
        assert!(out.windows(4).any(|w| w == b"****"));
        assert!(!out.windows(9).any(|w| w == b"topsecret"));
        assert!(!out.windows(6).any(|w| w == b"a@b.io"));
        assert!(body.ends_with(&(-1i32).to_be_bytes()));
        assert!(m.row(&(-1i16).to_be_bytes(), &mut stats).unwrap().is_none());
        assert!(m.row(&[0, 2, 0, 0], &mut stats).is_err());
    }
}
