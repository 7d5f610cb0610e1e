//! The 'p' message family: PasswordMessage, SASLInitialResponse and SASLResponse share
//! one tag, and only the authentication exchange in progress says which one arrived.
//! Part of `frontend`, which re-exports these items.
//!
//! These functions check layout only. They do not compare passwords, run SCRAM or hide
//! the secret from memory; a caller that logs their results leaks the password.

use bytes::{BufMut, BytesMut};

use super::WireError;
use super::reader::Reader;
use super::writer::{put_cstr, put_nullable, write_message};

/// The password in a cleartext PasswordMessage body: UTF-8, exactly one NUL, at the end.
pub fn password_cleartext(data: &[u8]) -> Result<&str, WireError> {
    let mut r = Reader::new(data, "PasswordMessage");
    let password = r.cstr()?;
    r.finish()?;
    Ok(password)
}

/// A SASLInitialResponse body: the chosen mechanism and the client-first message
/// (`None` when the client sent length -1, i.e. no initial data).
pub fn sasl_initial_response(data: &[u8]) -> Result<(&str, Option<&[u8]>), WireError> {
    let mut r = Reader::new(data, "SASLInitialResponse");
    let mechanism = r.cstr()?;
    let initial = r.nullable_bytes()?;
    r.finish()?;
    Ok((mechanism, initial))
}

/// A cleartext PasswordMessage. The NUL terminator is added here; bytes from an
/// interior NUL on are dropped (the server would stop reading there anyway).
pub fn encode_password(password: &[u8], out: &mut BytesMut) {
    write_message(out, Some(b'p'), |o| {
        put_cstr(o, password);
        Ok(())
    });
}

/// SASLInitialResponse: mechanism name, then the client-first message with its length.
pub fn encode_sasl_initial_response(mechanism: &str, data: &[u8], out: &mut BytesMut) {
    write_message(out, Some(b'p'), |o| {
        put_cstr(o, mechanism.as_bytes());
        put_nullable(o, Some(data))
    });
}

/// SASLResponse: the raw SASL payload fills the body.
pub fn encode_sasl_response(data: &[u8], out: &mut BytesMut) {
    write_message(out, Some(b'p'), |o| {
        o.put_slice(data);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wire::frontend::FrontendMessage;
    use crate::pg::wire::{MAX_AUTH_MESSAGE_LEN, decode_frame};

    /// The body of the one 'p' message an encoder wrote, checked via `FrontendMessage`.
    fn password_body(buf: &mut BytesMut) -> Vec<u8> {
        let f = decode_frame(buf, MAX_AUTH_MESSAGE_LEN).unwrap().unwrap();
        assert!(buf.is_empty(), "encoder wrote more than one message");
        let Ok(FrontendMessage::Password { data }) = FrontendMessage::parse(&f) else {
            panic!("not a password message")
        };
        data.to_vec()
    }

    #[test]
    fn password_round_trip() {
        let mut buf = BytesMut::new();
        encode_password(b"s3cret", &mut buf);
        assert_eq!(password_cleartext(&password_body(&mut buf)), Ok("s3cret"));
    }

    #[test]
    fn sasl_round_trips() {
        let mut buf = BytesMut::new();
        encode_sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc", &mut buf);
        let body = password_body(&mut buf);
        let expected: (&str, Option<&[u8]>) = ("SCRAM-SHA-256", Some(b"n,,n=,r=abc"));
        assert_eq!(sasl_initial_response(&body), Ok(expected));

        encode_sasl_response(b"c=biws,r=abc,p=xyz", &mut buf);
        assert_eq!(password_body(&mut buf), b"c=biws,r=abc,p=xyz");
    }

    #[test]
    fn sasl_initial_response_layout_is_checked() {
        assert_eq!(
            sasl_initial_response(b"M\0\xff\xff\xff\xff"),
            Ok(("M", None))
        );
        assert_eq!(sasl_initial_response(b"M"), Err(WireError::MissingNul));
        let err = sasl_initial_response(b"M\0\0\0\0\x09abc").unwrap_err();
        assert!(matches!(err, WireError::Truncated { .. }));
        let err = sasl_initial_response(b"M\0\0\0\0\x01ab").unwrap_err();
        assert!(matches!(err, WireError::TrailingData { extra: 1, .. }));
    }

    #[test]
    fn cleartext_password_needs_exactly_one_trailing_nul() {
        assert_eq!(password_cleartext(b"pw"), Err(WireError::MissingNul));
        let err = password_cleartext(b"pw\0x\0").unwrap_err();
        assert!(matches!(err, WireError::TrailingData { .. }));
        assert_eq!(password_cleartext(b"\xff\0"), Err(WireError::InvalidUtf8));
        assert_eq!(password_cleartext(b"\0"), Ok(""));
    }
}
