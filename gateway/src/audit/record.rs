//! The spool's record framing: `len: u32 BE | crc32c: u32 BE | kind: u8 | pb::AuditEvent`.
//!
//! `len` counts `kind` and the protobuf bytes; the CRC covers the same bytes. A
//! record is written with one `write(2)`, so after a crash only the last record
//! of a segment can be torn; [`decode`] tells a torn or corrupt record
//! ([`Decoded::Bad`]) from one that is simply not all there yet.

use countersign_proto::v1 as pb;
use prost::Message;

/// Header bytes before the kind: length and CRC.
const HEADER: usize = 8;
/// The largest record. PostgreSQL messages go up to 1 GiB, but a statement whose
/// event is bigger than this is refused (it could not be spooled, nor uploaded: the
/// control plane takes messages up to 64 MiB).
pub const MAX_RECORD: usize = 32 * 1024 * 1024;

/// Slice-by-16 tables (16 KiB, built at compile time): every record is summed twice, written
/// and read back, and this is several times faster than a byte at a time.
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// What a record means to the uploader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An event to upload as it is.
    Final = 1,
    /// A statement decided and about to be forwarded; its final event follows
    /// with the same `(session_id, seq)`.
    Intent = 2,
    /// The statement of an intent never ran (the server skipped it); nothing
    /// is uploaded for it.
    Cancel = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Final),
            2 => Some(Self::Intent),
            3 => Some(Self::Cancel),
            _ => None,
        }
    }
}

/// Appends one framed record to `out`.
pub fn encode(kind: Kind, event: &pb::AuditEvent, out: &mut Vec<u8>) {
    let body_len = 1 + event.encoded_len();
    out.reserve(HEADER + body_len);
    let start = out.len();
    out.extend_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind as u8);
    // Encoding into a Vec cannot run out of room.
    let _ = event.encode(out);
    let crc = CRC.checksum(&out[start + HEADER..]);
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_be_bytes());
}

/// The fields of a spooled event the uploader needs: those that match an intent with its
/// outcome or cancel, when it was written, and whether it ends its session; decoded without
/// the rest (protobuf skips the fields a message does not declare). The tags are those of
/// `pb::AuditEvent`; a test holds them to it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventKey {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(int64, tag = "3")]
    pub at: i64,
    /// Present when the event is `SessionEnded` (its fields are skipped).
    #[prost(message, optional, tag = "12")]
    pub session_ended: Option<Skipped>,
}

/// A message whose fields are all skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Skipped {}

#[derive(Debug)]
pub enum Decoded<'a> {
    /// A whole record with a good CRC: its kind, its `pb::AuditEvent` bytes (not decoded
    /// yet), and how many bytes the record took.
    Record {
        kind: Kind,
        event: &'a [u8],
        len: usize,
    },
    /// Not all of the record is in `buf` yet; at least this many bytes are needed.
    Incomplete(usize),
    /// Torn or corrupt: a bad length, CRC or kind.
    Bad(&'static str),
}

/// Reads the record at the start of `buf`: its framing, CRC and kind. The event's bytes are
/// left for the caller to decode as far as it needs.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some(header) = buf.get(..HEADER) else {
        return Decoded::Incomplete(HEADER);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len > MAX_RECORD {
        return Decoded::Bad("bad record length");
    }
    let Some(body) = buf.get(HEADER..HEADER + len) else {
        return Decoded::Incomplete(HEADER + len);
    };
    if CRC.checksum(body) != crc {
        return Decoded::Bad("CRC mismatch");
    }
    let Some(kind) = Kind::from_byte(body[0]) else {
        return Decoded::Bad("unknown record kind");
    };
    Decoded::Record {
        kind,
        event: &body[1..],
        len: HEADER + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_crc32c() {
        // The standard check value: spool files written by any build read in any other.
        assert_eq!(CRC.checksum(b"123456789"), 0xe306_9283);
        let bytecrc = crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISCSI);
        let long: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for n in [0, 1, 15, 16, 17, 255, 1000] {
            assert_eq!(CRC.checksum(&long[..n]), bytecrc.checksum(&long[..n]));
        }
    }

    fn event(seq: u64) -> pb::AuditEvent {
        pb::AuditEvent {
            session_id: "s1".into(),
            seq,
            at: 42,
            event: Some(pb::audit_event::Event::SessionEnded(pb::SessionEnded {
                identity: "alice".into(),
                resource: "db".into(),
                reason: "bye".into(),
                statements: 3,
            })),
        }
    }

    #[test]
    fn round_trips_and_needs_whole_records() {
        let mut buf = Vec::new();
        encode(Kind::Intent, &event(1), &mut buf);
        encode(Kind::Final, &event(2), &mut buf);
        let Decoded::Record {
            kind,
            event: e,
            len,
        } = decode(&buf)
        else {
            panic!("no record")
        };
        assert_eq!(kind, Kind::Intent);
        assert_eq!(pb::AuditEvent::decode(e).unwrap(), event(1));
        let Decoded::Record { kind, event: e, .. } = decode(&buf[len..]) else {
            panic!("no second record")
        };
        assert_eq!(kind, Kind::Final);
        assert_eq!(pb::AuditEvent::decode(e).unwrap(), event(2));
        for cut in 0..len {
            assert!(
                matches!(decode(&buf[..cut]), Decoded::Incomplete(_)),
                "{cut}"
            );
        }
    }

    #[test]
    fn the_key_decodes_from_a_whole_event() {
        let mut e = event(77);
        e.session_id = "s-9".into();
        let key = EventKey::decode(e.encode_to_vec().as_slice()).unwrap();
        assert_eq!((key.session_id.as_str(), key.seq, key.at), ("s-9", 77, 42));
        assert!(key.session_ended.is_some());
        e.event = Some(pb::audit_event::Event::Statement(pb::StatementExecuted {
            statement: "SELECT 1".into(),
            ..Default::default()
        }));
        let key = EventKey::decode(e.encode_to_vec().as_slice()).unwrap();
        assert_eq!((key.session_id.as_str(), key.seq, key.at), ("s-9", 77, 42));
        assert!(key.session_ended.is_none());
    }

    #[test]
    fn corruption_is_detected() {
        let mut buf = Vec::new();
        encode(Kind::Final, &event(7), &mut buf);
        for i in 4..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(matches!(decode(&bad), Decoded::Bad(_)), "byte {i}");
        }
        assert!(matches!(decode(&[0; 16]), Decoded::Bad(_)));
        assert!(matches!(decode(&[0xff; 16]), Decoded::Bad(_)));
    }
}
