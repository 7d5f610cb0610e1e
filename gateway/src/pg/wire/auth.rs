//! Authentication requests ('R' from the server): parsing what upstream asks of us,
//! and encoding the two requests the gateway makes of its own clients.
//!
//! Parsing checks layout for the methods the gateway can act on (cleartext, MD5, SASL).
//! Any other method becomes [`Authentication::Other`] with its body unchecked: the
//! gateway does not implement it, so the session refuses it whatever the body holds.

use bytes::{BufMut, BytesMut};

use super::WireError;
use super::reader::Reader;
use super::writer::write_message;

const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// An AuthenticationXxx message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// The mechanisms the server offers, in its order of preference.
    Sasl {
        mechanisms: Vec<&'a str>,
    },
    SaslContinue {
        data: &'a [u8],
    },
    SaslFinal {
        data: &'a [u8],
    },
    /// Kerberos, GSSAPI, SSPI and anything newer: the request code only.
    Other(i32),
}

impl<'a> Authentication<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "Authentication");
        let auth = match r.i32()? {
            AUTH_OK => Self::Ok,
            AUTH_CLEARTEXT => Self::CleartextPassword,
            AUTH_MD5 => Self::Md5Password { salt: r.array()? },
            AUTH_SASL => {
                // Names end with an empty one; each takes at least one byte, so the
                // list cannot outgrow the (already size-capped) body.
                let mut mechanisms = Vec::new();
                loop {
                    match r.cstr()? {
                        "" => break,
                        m => mechanisms.push(m),
                    }
                }
                Self::Sasl { mechanisms }
            }
            AUTH_SASL_CONTINUE => Self::SaslContinue { data: r.rest() },
            AUTH_SASL_FINAL => Self::SaslFinal { data: r.rest() },
            other => {
                r.rest();
                Self::Other(other)
            }
        };
        r.finish()?;
        Ok(auth)
    }
}

/// AuthenticationOk.
pub fn encode_auth_ok(out: &mut BytesMut) {
    encode_code(AUTH_OK, out);
}

/// AuthenticationCleartextPassword: ask the client for a password in the clear (the
/// client connection is expected to be TLS).
pub fn encode_auth_cleartext_request(out: &mut BytesMut) {
    encode_code(AUTH_CLEARTEXT, out);
}

fn encode_code(code: i32, out: &mut BytesMut) {
    write_message(out, Some(b'R'), |o| {
        o.put_i32(code);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: i32, rest: &[u8]) -> Vec<u8> {
        [&code.to_be_bytes()[..], rest].concat()
    }

    #[test]
    fn parses_each_method() {
        let p =
            |code, rest: &[u8]| Authentication::parse(&body(code, rest)).map(|a| format!("{a:?}"));
        assert_eq!(p(0, b"").unwrap(), "Ok");
        assert_eq!(p(3, b"").unwrap(), "CleartextPassword");
        assert_eq!(
            p(5, b"abcd").unwrap(),
            "Md5Password { salt: [97, 98, 99, 100] }"
        );
        let sasl = body(10, b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let expected = Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"],
        };
        assert_eq!(Authentication::parse(&sasl), Ok(expected));
        let cont = body(11, b"r=abc,s=x,i=4096");
        assert_eq!(
            Authentication::parse(&cont),
            Ok(Authentication::SaslContinue {
                data: b"r=abc,s=x,i=4096"
            })
        );
        let fin = body(12, b"v=xyz");
        assert_eq!(
            Authentication::parse(&fin),
            Ok(Authentication::SaslFinal { data: b"v=xyz" })
        );
        assert_eq!(
            Authentication::parse(&body(7, b"opaque")),
            Ok(Authentication::Other(7))
        );
    }

    #[test]
    fn malformed_requests_are_refused() {
        let p = |code, rest: &[u8]| Authentication::parse(&body(code, rest)).map(|_| ());
        assert!(matches!(p(0, b"x"), Err(WireError::TrailingData { .. })));
        assert!(matches!(p(5, b"abc"), Err(WireError::Truncated { .. })));
        assert!(matches!(
            p(5, b"abcde"),
            Err(WireError::TrailingData { .. })
        ));
        assert_eq!(p(10, b"SCRAM-SHA-256\0"), Err(WireError::MissingNul));
        assert!(matches!(
            Authentication::parse(b"\0\0"),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn encoders_round_trip() {
        let mut out = BytesMut::new();
        encode_auth_ok(&mut out);
        assert_eq!(&out[..], b"R\0\0\0\x08\0\0\0\0");
        assert_eq!(Authentication::parse(&out[5..]), Ok(Authentication::Ok));
        let mut out = BytesMut::new();
        encode_auth_cleartext_request(&mut out);
        assert_eq!(
            Authentication::parse(&out[5..]),
            Ok(Authentication::CleartextPassword)
        );
    }
}
