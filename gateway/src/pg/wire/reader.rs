//! A bounds-checked cursor over one message body.
//!
//! Every read returns `Result`, so parsers cannot index past the end of peer data.
//! The reader checks structure only (lengths, terminators, UTF-8); it knows nothing
//! about what the fields mean.

use super::WireError;

/// Reads big-endian fields from the front of a byte slice.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    /// Names the message in errors ("Bind", "DataRow", ...).
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn truncated(&self) -> WireError {
        WireError::Truncated { what: self.what }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let (head, rest) = self.buf.split_first_chunk::<N>().ok_or(self.truncated())?;
        self.buf = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        self.array::<1>().map(|[b]| b)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, WireError> {
        self.array().map(i16::from_be_bytes)
    }

    pub(crate) fn i32(&mut self) -> Result<i32, WireError> {
        self.array().map(i32::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let (head, rest) = self.buf.split_at_checked(n).ok_or(self.truncated())?;
        self.buf = rest;
        Ok(head)
    }

    /// Everything left; used for fields that run to the end of the message.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// A NUL-terminated UTF-8 string, without its terminator.
    pub(crate) fn cstr(&mut self) -> Result<&'a str, WireError> {
        let nul = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::MissingNul)?;
        let s = self.bytes(nul)?;
        self.bytes(1)?; // the NUL itself
        std::str::from_utf8(s).map_err(|_| WireError::InvalidUtf8)
    }

    /// An Int32 length followed by that many bytes; -1 means NULL.
    pub(crate) fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, WireError> {
        match self.i32()? {
            -1 => Ok(None),
            len => {
                let n = usize::try_from(len).map_err(|_| WireError::InvalidFieldLength {
                    what: self.what,
                    len,
                })?;
                self.bytes(n).map(Some)
            }
        }
    }

    /// An Int16 item count, checked against the bytes left so that a tiny message
    /// cannot make the caller reserve space for 65535 items.
    ///
    /// Read as unsigned: PostgreSQL's own backend and libpq treat these counts as
    /// uint16, so a statement may legitimately have up to 65535 parameters.
    pub(crate) fn count16(&mut self, min_item_len: usize) -> Result<usize, WireError> {
        let count = usize::from(u16::from_be_bytes(self.array()?));
        self.check_count(count, min_item_len)
    }

    /// An Int32 item count; negative counts are rejected.
    pub(crate) fn count32(&mut self, min_item_len: usize) -> Result<usize, WireError> {
        let raw = self.i32()?;
        let count = usize::try_from(raw).map_err(|_| WireError::CountTooLarge {
            what: self.what,
            count: i64::from(raw),
            remaining: self.remaining(),
        })?;
        self.check_count(count, min_item_len)
    }

    fn check_count(&self, count: usize, min_item_len: usize) -> Result<usize, WireError> {
        if count.saturating_mul(min_item_len) > self.remaining() {
            return Err(WireError::CountTooLarge {
                what: self.what,
                count: i64::try_from(count).unwrap_or(i64::MAX),
                remaining: self.remaining(),
            });
        }
        Ok(count)
    }

    /// `count` fields read by `item`, after the count was bounded by the caller.
    pub(crate) fn items<T>(
        &mut self,
        count: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, WireError>,
    ) -> Result<Vec<T>, WireError> {
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// Succeeds only if the whole body was consumed: trailing bytes mean the peer and
    /// we disagree about the message layout, and we refuse to guess.
    pub(crate) fn finish(self) -> Result<(), WireError> {
        match self.buf.len() {
            0 => Ok(()),
            extra => Err(WireError::TrailingData {
                what: self.what,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_fields_and_detects_truncation() {
        let mut r = Reader::new(&[0, 1, 0xff, 0xff, 0xff, 0xfe, 7], "t");
        assert_eq!(r.i16().unwrap(), 1);
        assert_eq!(r.i32().unwrap(), -2);
        assert_eq!(r.i32(), Err(WireError::Truncated { what: "t" }));
        // A failed read consumes nothing.
        assert_eq!(r.u8().unwrap(), 7);
        r.finish().unwrap();
    }

    #[test]
    fn cstr_requires_nul_and_utf8() {
        assert_eq!(Reader::new(b"abc", "t").cstr(), Err(WireError::MissingNul));
        assert_eq!(
            Reader::new(b"\xff\0", "t").cstr(),
            Err(WireError::InvalidUtf8)
        );
        let mut r = Reader::new(b"ab\0\0", "t");
        assert_eq!(r.cstr().unwrap(), "ab");
        assert_eq!(r.cstr().unwrap(), "");
        r.finish().unwrap();
    }

    #[test]
    fn nullable_bytes_rejects_negative_lengths_other_than_minus_one() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff], "t");
        assert_eq!(r.nullable_bytes().unwrap(), None);
        let minus_two = (-2i32).to_be_bytes();
        let err = Reader::new(&minus_two, "t").nullable_bytes();
        assert_eq!(
            err,
            Err(WireError::InvalidFieldLength { what: "t", len: -2 })
        );
        let max = i32::MAX.to_be_bytes();
        let err = Reader::new(&max, "t").nullable_bytes();
        assert_eq!(err, Err(WireError::Truncated { what: "t" }));
    }

    #[test]
    fn counts_are_bounded_by_remaining_bytes() {
        let err = Reader::new(&[0xff, 0xff, 0, 0], "t")
            .count16(4)
            .unwrap_err();
        assert!(matches!(err, WireError::CountTooLarge { count: 65535, .. }));
        let err = Reader::new(&(-1i32).to_be_bytes(), "t")
            .count32(1)
            .unwrap_err();
        assert!(matches!(err, WireError::CountTooLarge { count: -1, .. }));
        assert_eq!(Reader::new(&[0, 1, 9, 9], "t").count16(2).unwrap(), 1);
    }

    #[test]
    fn finish_reports_trailing_bytes() {
        let r = Reader::new(&[1, 2], "t");
        assert_eq!(
            r.finish(),
            Err(WireError::TrailingData {
                what: "t",
                extra: 2
            })
        );
    }
}
