//! Startup-phase packets: the untagged `len:i32 code:u32 ...` messages a client sends
//! before the first tagged message.
//!
//! Guarantees: a returned packet is complete, within [`MAX_STARTUP_LEN`], asks for
//! protocol major 3 (any minor; the session decides whether to negotiate it down),
//! and has UTF-8 parameters with no duplicate names. It does not check which
//! parameters are present or meaningful (e.g. that `user` is set); that is session policy.

use std::collections::HashSet;

use bytes::{BufMut, BytesMut};

use super::reader::Reader;
use super::writer::{put_cstr, write_message};
use super::{MAX_STARTUP_LEN, WireError};

/// Protocol 3.0, the version we speak and send upstream.
pub const PROTOCOL_3_0: u32 = 3 << 16;
/// `1234.5679`, sent instead of a startup packet to ask for TLS.
pub const SSL_REQUEST_CODE: u32 = 80_877_103;
/// `1234.5680`, sent to ask for GSSAPI encryption.
pub const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// `1234.5678`, sent on a fresh connection to cancel a running query.
pub const CANCEL_REQUEST_CODE: u32 = 80_877_102;
/// Major version 1234 is reserved for the special request codes above.
const SPECIAL_MAJOR: u32 = 1234;

/// A packet from the startup phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    CancelRequest {
        process_id: i32,
        secret_key: i32,
    },
    Startup {
        protocol_version: u32,
        params: Vec<(String, String)>,
    },
}

impl StartupPacket {
    /// The value of a startup parameter such as `user` or `database`.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            Self::Startup { params, .. } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            _ => None,
        }
    }
}

/// Takes one startup packet off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed; `buf` is left untouched. The length is
/// checked against [`MAX_STARTUP_LEN`] as soon as its 4 bytes arrive.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, WireError> {
    let Some(&len) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = i32::from_be_bytes(len);
    // The length word plus the request code is the smallest possible packet.
    let ulen = match usize::try_from(len) {
        Ok(n) if n >= 8 => n,
        _ => return Err(WireError::LengthTooSmall { len }),
    };
    if ulen > MAX_STARTUP_LEN {
        return Err(WireError::LengthTooLarge {
            len: ulen,
            max: MAX_STARTUP_LEN,
        });
    }
    let Some(packet) = buf.get(4..ulen) else {
        return Ok(None);
    };
    let parsed = parse_packet(packet)?;
    let _ = buf.split_to(ulen);
    Ok(Some(parsed))
}

fn parse_packet(packet: &[u8]) -> Result<StartupPacket, WireError> {
    let mut r = Reader::new(packet, "startup packet");
    let code = r.u32()?;
    let parsed = match code {
        SSL_REQUEST_CODE => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE => StartupPacket::CancelRequest {
            process_id: r.i32()?,
            secret_key: r.i32()?,
        },
        _ if code >> 16 == SPECIAL_MAJOR => return Err(WireError::UnknownStartupCode(code)),
        _ if code >> 16 != 3 => return Err(WireError::UnsupportedProtocolVersion(code)),
        _ => StartupPacket::Startup {
            protocol_version: code,
            params: parse_params(&mut r)?,
        },
    };
    r.finish()?;
    Ok(parsed)
}

/// `name\0value\0` pairs ending with a lone `\0`. A missing final NUL or a name without
/// a value both surface as `MissingNul`.
fn parse_params(r: &mut Reader<'_>) -> Result<Vec<(String, String)>, WireError> {
    let mut params = Vec::new();
    // A set rather than a scan of `params`: a 10 kB packet can hold ~3000 names, and a
    // quadratic check would be CPU a client could spend before authenticating.
    let mut seen = HashSet::new();
    loop {
        let name = r.cstr()?;
        if name.is_empty() {
            return Ok(params);
        }
        let value = r.cstr()?;
        if !seen.insert(name) {
            return Err(WireError::DuplicateStartupParameter);
        }
        params.push((name.to_owned(), value.to_owned()));
    }
}

/// A protocol 3.0 startup packet. Names and values are written up to any interior NUL.
pub fn encode_startup(params: &[(&str, &str)], out: &mut BytesMut) {
    write_message(out, None, |o| {
        o.put_u32(PROTOCOL_3_0);
        for (k, v) in params {
            put_cstr(o, k.as_bytes());
            put_cstr(o, v.as_bytes());
        }
        o.put_u8(0);
        Ok(())
    });
}

pub fn encode_ssl_request(out: &mut BytesMut) {
    write_message(out, None, |o| {
        o.put_u32(SSL_REQUEST_CODE);
        Ok(())
    });
}

pub fn encode_cancel_request(process_id: i32, secret_key: i32, out: &mut BytesMut) {
    write_message(out, None, |o| {
        o.put_u32(CANCEL_REQUEST_CODE);
        o.put_i32(process_id);
        o.put_i32(secret_key);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wire::test_util::Lcg;

    fn packet(code: u32, body: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_i32(body.len() as i32 + 8);
        b.put_u32(code);
        b.put_slice(body);
        b
    }

    #[test]
    fn startup_round_trip() {
        let mut buf = BytesMut::new();
        encode_startup(
            &[("user", "alice"), ("database", "app"), ("options", "")],
            &mut buf,
        );
        let p = decode_startup(&mut buf).unwrap().unwrap();
        assert!(buf.is_empty());
        assert_eq!(p.param("user"), Some("alice"));
        assert_eq!(p.param("database"), Some("app"));
        assert_eq!(p.param("options"), Some(""));
        assert_eq!(p.param("application_name"), None);
        let StartupPacket::Startup {
            protocol_version,
            params,
        } = p
        else {
            panic!("not a startup packet")
        };
        assert_eq!(protocol_version, 196_608);
        assert_eq!(params.len(), 3);
    }

    #[test]
    fn ssl_and_cancel_round_trip() {
        let mut buf = BytesMut::new();
        encode_ssl_request(&mut buf);
        encode_cancel_request(77, -5, &mut buf);
        assert_eq!(
            decode_startup(&mut buf),
            Ok(Some(StartupPacket::SslRequest))
        );
        let cancel = StartupPacket::CancelRequest {
            process_id: 77,
            secret_key: -5,
        };
        assert_eq!(decode_startup(&mut buf), Ok(Some(cancel)));
        assert!(buf.is_empty());
        let mut buf = packet(GSSENC_REQUEST_CODE, b"");
        assert_eq!(
            decode_startup(&mut buf),
            Ok(Some(StartupPacket::GssEncRequest))
        );
        assert_eq!(StartupPacket::SslRequest.param("user"), None);
    }

    #[test]
    fn accepts_newer_minor_versions() {
        let mut buf = packet(PROTOCOL_3_0 | 2, b"user\0bob\0\0");
        let p = decode_startup(&mut buf).unwrap().unwrap();
        assert!(matches!(
            p,
            StartupPacket::Startup {
                protocol_version: 196_610,
                ..
            }
        ));
    }

    #[test]
    fn fragmented_startup_waits_for_the_whole_packet() {
        let mut wire = BytesMut::new();
        encode_ssl_request(&mut wire);
        encode_startup(&[("user", "alice")], &mut wire);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            let before = buf.len();
            match decode_startup(&mut buf).unwrap() {
                Some(p) => got.push(p),
                None => assert_eq!(buf.len(), before),
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].param("user"), Some("alice"));
    }

    #[test]
    fn rejects_bad_lengths() {
        for len in [-1i32, 0, 4, 7] {
            let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
            assert_eq!(
                decode_startup(&mut buf),
                Err(WireError::LengthTooSmall { len })
            );
        }
        let mut buf = BytesMut::from(&10_001i32.to_be_bytes()[..]);
        let err = WireError::LengthTooLarge {
            len: 10_001,
            max: MAX_STARTUP_LEN,
        };
        assert_eq!(decode_startup(&mut buf), Err(err));
    }

    #[test]
    fn rejects_wrong_versions_and_codes() {
        let mut buf = packet(2 << 16, b"user\0bob\0\0");
        assert_eq!(
            decode_startup(&mut buf),
            Err(WireError::UnsupportedProtocolVersion(2 << 16))
        );
        let mut buf = packet(4 << 16, b"\0");
        assert!(matches!(
            decode_startup(&mut buf),
            Err(WireError::UnsupportedProtocolVersion(_))
        ));
        let code = (1234 << 16) | 9999;
        let mut buf = packet(code, b"");
        assert_eq!(
            decode_startup(&mut buf),
            Err(WireError::UnknownStartupCode(code))
        );
    }

    #[test]
    fn rejects_malformed_parameter_lists() {
        let cases: [(&[u8], WireError); 6] = [
            (b"user\0bob\0", WireError::MissingNul), // no final terminator
            (b"user\0bob", WireError::MissingNul),   // value not terminated
            (b"user\0\0", WireError::MissingNul),    // odd count: name without value
            (b"user\0\xff\0\0", WireError::InvalidUtf8),
            (b"a\0b\0a\0c\0\0", WireError::DuplicateStartupParameter),
            (
                b"user\0bob\0\0junk",
                WireError::TrailingData {
                    what: "startup packet",
                    extra: 4,
                },
            ),
        ];
        for (body, err) in cases {
            let mut buf = packet(PROTOCOL_3_0, body);
            assert_eq!(decode_startup(&mut buf), Err(err), "body {body:?}");
        }
    }

    #[test]
    fn rejects_special_requests_with_wrong_sizes() {
        let mut buf = packet(SSL_REQUEST_CODE, b"x");
        assert!(matches!(
            decode_startup(&mut buf),
            Err(WireError::TrailingData { .. })
        ));
        let mut buf = packet(CANCEL_REQUEST_CODE, &[0; 4]);
        assert!(matches!(
            decode_startup(&mut buf),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Lcg(7);
        for _ in 0..2_000 {
            let n = rng.below(64);
            let mut buf = BytesMut::from(&rng.bytes(n)[..]);
            // Any outcome but a panic is fine; most must be errors or "need more".
            let _ = decode_startup(&mut buf);
            // With a plausible length prefix the body is garbage, which must be refused.
            let body = rng.bytes(n);
            let mut buf = packet(PROTOCOL_3_0, &body);
            if let Ok(Some(p)) = decode_startup(&mut buf) {
                assert!(body.ends_with(&[0]), "accepted {body:?} as {p:?}");
            }
        }
    }
}
