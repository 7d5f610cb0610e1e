//! Helpers the encoders share: length-prefixed message framing and C strings. Masking
//! (`pg::mask`) uses them too, for the rows it rewrites value by value.
//!
//! Encoders take values from our own code, not raw peer bytes, but some of those values
//! (column data, error text) did come from a peer. Two rules keep them from changing the
//! message structure: a string is written only up to its first NUL, so it cannot end its
//! field early and smuggle in another; and a message whose lengths or counts do not fit
//! the protocol's integer widths is not written at all (the output is rolled back and the
//! failure logged), so a saturated length can never desynchronise the peer.

use bytes::{BufMut, BytesMut};

/// A length or count does not fit its wire field.
#[derive(Debug)]
pub(crate) struct Unrepresentable;

/// Writes `[tag] len:i32 body`, where `len` counts itself and the body but not the tag.
/// Startup-phase packets pass `tag = None`.
pub(crate) fn write_message(
    out: &mut BytesMut,
    tag: Option<u8>,
    body: impl FnOnce(&mut BytesMut) -> Result<(), Unrepresentable>,
) {
    let start = out.len();
    if let Some(tag) = tag {
        out.put_u8(tag);
    }
    let len_at = out.len();
    out.put_i32(0); // patched below, once the body length is known
    let len = body(out)
        .ok()
        .and_then(|()| out.len().checked_sub(len_at))
        .and_then(|n| i32::try_from(n).ok());
    match (len, out.get_mut(len_at..len_at + 4)) {
        (Some(len), Some(slot)) => slot.copy_from_slice(&len.to_be_bytes()),
        _ => {
            out.truncate(start);
            tracing::error!(
                tag = ?tag.map(char::from),
                "PostgreSQL message too large to encode; not sent"
            );
        }
    }
}

/// A NUL-terminated string. Anything from the first interior NUL on is dropped: that is
/// what a C client would send, and it keeps the field from ending early.
pub(crate) fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
    out.put_slice(s.get(..end).unwrap_or_default());
    out.put_u8(0);
}

/// An Int16 item count. Written unsigned, matching how PostgreSQL reads it.
pub(crate) fn put_count16(out: &mut BytesMut, n: usize) -> Result<(), Unrepresentable> {
    out.put_u16(u16::try_from(n).map_err(|_| Unrepresentable)?);
    Ok(())
}

/// An Int32 length followed by the bytes; `None` is written as length -1 (NULL).
pub(crate) fn put_nullable(out: &mut BytesMut, v: Option<&[u8]>) -> Result<(), Unrepresentable> {
    match v {
        None => out.put_i32(-1),
        Some(v) => {
            out.put_i32(i32::try_from(v.len()).map_err(|_| Unrepresentable)?);
            out.put_slice(v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_length_counts_itself_but_not_the_tag() {
        let mut out = BytesMut::new();
        write_message(&mut out, Some(b'Q'), |o| {
            put_cstr(o, b"hi");
            Ok(())
        });
        assert_eq!(&out[..], b"Q\0\0\0\x07hi\0");
    }

    #[test]
    fn untagged_message_for_startup() {
        let mut out = BytesMut::new();
        write_message(&mut out, None, |o| {
            o.put_u8(1);
            Ok(())
        });
        assert_eq!(&out[..], b"\0\0\0\x05\x01");
    }

    #[test]
    fn cstr_stops_at_interior_nul() {
        let mut out = BytesMut::new();
        put_cstr(&mut out, b"ab\0Cevil");
        assert_eq!(&out[..], b"ab\0");
    }

    #[test]
    fn unrepresentable_body_rolls_back_only_this_message() {
        let mut out = BytesMut::from(&b"keep"[..]);
        write_message(&mut out, Some(b'D'), |o| {
            o.put_slice(b"partial");
            put_count16(o, 70_000)
        });
        assert_eq!(&out[..], b"keep");
    }
}
