//! Framing of tagged messages: `tag:u8 len:i32 body`, where `len` counts itself.
//!
//! This layer only finds message boundaries. It guarantees that a returned [`Frame`] is
//! complete and within the caller's size cap; it does not check that the tag is valid for
//! the direction or that the body is well formed (see `frontend` and `backend` for that).

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::WireError;

/// Tag byte plus the length word.
pub const HEADER_LEN: usize = 5;

/// One whole tagged message. `bytes` holds tag + length + body exactly as received,
/// so it can be forwarded without copying or re-encoding.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub bytes: Bytes,
}

impl Frame {
    /// The body, after the 5-byte header. Empty if `bytes` is shorter than a header
    /// (only possible for a hand-built `Frame`; `decode_frame` never returns one).
    pub fn body(&self) -> &[u8] {
        self.bytes.get(HEADER_LEN..).unwrap_or_default()
    }

    /// Length of the whole message on the wire, header included.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True only for a hand-built empty `Frame`.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Prints the tag and size only: bodies can hold passwords and query results.
impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("tag", &char::from(self.tag))
            .field("len", &self.len())
            .finish()
    }
}

/// Takes one whole message off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed; `buf` is left untouched. `max_len` caps the
/// length word (which includes its own 4 bytes), and is checked as soon as the header
/// arrives, so an oversized message is rejected before its body is read.
///
/// Nothing is reserved for the announced body: the buffer grows only as bytes actually
/// arrive, so a peer cannot make us allocate `max_len` by sending a 5-byte header.
pub fn decode_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, WireError> {
    let Some(&[tag, a, b, c, d]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    // Negative lengths fail the conversion; lengths 0..4 cannot cover the length word.
    let ulen = match usize::try_from(len) {
        Ok(n) if n >= 4 => n,
        _ => return Err(WireError::LengthTooSmall { len }),
    };
    if ulen > max_len {
        return Err(WireError::LengthTooLarge {
            len: ulen,
            max: max_len,
        });
    }
    let total = ulen + 1; // cannot overflow: ulen <= i32::MAX
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(Frame {
        tag,
        bytes: buf.split_to(total).freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wire::test_util::Lcg;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decodes_exact_frame_and_leaves_the_rest() {
        let mut wire = msg(b'Q', b"SELECT 1\0");
        wire.extend(msg(b'S', b""));
        let mut buf = BytesMut::from(&wire[..]);
        let f1 = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(f1.tag, b'Q');
        assert_eq!(f1.body(), b"SELECT 1\0");
        assert_eq!(f1.len(), 14);
        assert_eq!(&f1.bytes[..], &msg(b'Q', b"SELECT 1\0")[..]);
        let f2 = decode_frame(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((f2.tag, f2.body()), (b'S', &b""[..]));
        assert!(buf.is_empty());
        assert_eq!(decode_frame(&mut buf, 1024), Ok(None));
    }

    #[test]
    fn byte_at_a_time_returns_none_until_complete() {
        let wire = msg(b'd', &[7; 300]);
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = decode_frame(&mut buf, 1024).unwrap();
            if i + 1 < wire.len() {
                assert_eq!(got, None, "early frame at byte {i}");
                assert_eq!(buf.len(), i + 1, "buffer touched while incomplete");
            } else {
                assert_eq!(&got.unwrap().bytes[..], &wire[..]);
            }
        }
    }

    #[test]
    fn random_splits_yield_the_same_frames() {
        let mut rng = Lcg(42);
        let msgs: Vec<Vec<u8>> = (0..20u8)
            .map(|i| msg(b'A' + i, &vec![i; rng.below(200)]))
            .collect();
        let wire: Vec<u8> = msgs.concat();
        for _ in 0..50 {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < wire.len() {
                let n = (1 + rng.below(64)).min(wire.len() - pos);
                buf.extend_from_slice(&wire[pos..pos + n]);
                pos += n;
                while let Some(f) = decode_frame(&mut buf, 1024).unwrap() {
                    got.push(f.bytes.to_vec());
                }
            }
            assert_eq!(got, msgs);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn rejects_bad_lengths_from_the_header_alone() {
        for len in [-1i32, i32::MIN, 0, 3] {
            let mut buf = BytesMut::from(&msg(b'Q', b"")[..1]);
            buf.extend_from_slice(&len.to_be_bytes());
            assert_eq!(
                decode_frame(&mut buf, 1024),
                Err(WireError::LengthTooSmall { len })
            );
        }
        let mut buf = BytesMut::from(&b"Q\x7f\xff\xff\xff"[..]);
        let err = decode_frame(&mut buf, 1 << 30).unwrap_err();
        assert_eq!(
            err,
            WireError::LengthTooLarge {
                len: i32::MAX as usize,
                max: 1 << 30
            }
        );
        // Cap is inclusive, and checked before any body bytes arrive.
        let mut buf = BytesMut::from(&b"p\0\0\0\x09"[..]);
        assert_eq!(decode_frame(&mut buf, 9), Ok(None));
        assert!(decode_frame(&mut buf, 8).is_err());
    }

    #[test]
    fn no_reservation_for_announced_length() {
        let mut buf = BytesMut::from(&b"Q\x3f\xff\xff\xff"[..]);
        let before = buf.capacity();
        assert_eq!(decode_frame(&mut buf, 1 << 30), Ok(None));
        assert_eq!(buf.capacity(), before);
    }

    #[test]
    fn length_four_is_an_empty_body_and_truncated_body_waits() {
        let mut buf = BytesMut::from(&b"H\0\0\0\x04"[..]);
        assert_eq!(decode_frame(&mut buf, 1024).unwrap().unwrap().body(), b"");
        let mut buf = BytesMut::from(&b"Q\0\0\0\x10abc"[..]);
        assert_eq!(decode_frame(&mut buf, 1024), Ok(None));
    }

    #[test]
    fn hand_built_short_frame_has_empty_body() {
        let f = Frame {
            tag: b'Q',
            bytes: Bytes::from_static(b"Q\0"),
        };
        assert_eq!(f.body(), b"");
        assert_eq!(format!("{f:?}"), "Frame { tag: 'Q', len: 2 }");
    }

    /// The reader loop the session uses: read into a buffer the stream owns, then
    /// decode until a whole frame is there. Reads arrive split mid-header and mid-body.
    #[tokio::test]
    async fn reader_loop_over_fragmented_io() {
        use tokio::io::AsyncReadExt;
        let mut wire = msg(b'Q', b"SELECT 1\0");
        wire.extend(msg(b'X', b""));
        let mut io = tokio_test::io::Builder::new()
            .read(&wire[..2])
            .read(&wire[2..7])
            .read(&wire[7..15])
            .read(&wire[15..])
            .build();
        let mut buf = BytesMut::with_capacity(64);
        let mut frames = Vec::new();
        loop {
            while let Some(f) = decode_frame(&mut buf, 1024).unwrap() {
                frames.push(f);
            }
            if io.read_buf(&mut buf).await.unwrap() == 0 {
                break;
            }
        }
        assert!(buf.is_empty(), "bytes left at EOF");
        let tags: Vec<u8> = frames.iter().map(|f| f.tag).collect();
        assert_eq!(tags, b"QX");
        assert_eq!(frames[0].body(), b"SELECT 1\0");
    }
}
