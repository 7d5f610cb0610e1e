//! ErrorResponse ('E') and NoticeResponse ('N'): the same list of `(code, value)`
//! fields, parsed into [`ErrorFields`] and written from an [`ErrorNotice`].
//!
//! Parsing keeps every field, known or not, in order. It does not check that the
//! required fields (S, V, C, M) are present: the accessors return `Option` instead.
//! Encoding writes strings only up to any interior NUL, so text that came from a peer
//! (a user name in a message, say) cannot end its field and forge another one.

use bytes::{BufMut, BytesMut};

use super::WireError;
use super::reader::Reader;
use super::writer::{put_cstr, write_message};

/// The fields of an ErrorResponse or NoticeResponse, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    fields: Vec<(u8, &'a str)>,
}

impl<'a> ErrorFields<'a> {
    /// Fields are `code:u8 value:cstr`, ended by a zero code byte.
    pub(crate) fn parse(body: &'a [u8], what: &'static str) -> Result<Self, WireError> {
        let mut r = Reader::new(body, what);
        let mut fields = Vec::new();
        loop {
            match r.u8()? {
                0 => break,
                code => fields.push((code, r.cstr()?)),
            }
        }
        r.finish()?;
        Ok(Self { fields })
    }

    /// Every field in the order received.
    pub fn fields(&self) -> &[(u8, &'a str)] {
        &self.fields
    }

    /// The first field with this code.
    pub fn get(&self, code: u8) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| *v)
    }

    /// The non-localized severity ('V') when present, else the localized one ('S'):
    /// 'V' is what code should match on, but servers before 9.6 only send 'S'.
    pub fn severity(&self) -> Option<&'a str> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }

    /// The SQLSTATE ('C').
    pub fn code(&self) -> Option<&'a str> {
        self.get(b'C')
    }

    /// The primary message ('M').
    pub fn message(&self) -> Option<&'a str> {
        self.get(b'M')
    }

    pub fn detail(&self) -> Option<&'a str> {
        self.get(b'D')
    }

    pub fn hint(&self) -> Option<&'a str> {
        self.get(b'H')
    }
}

/// Message severities, as PostgreSQL spells them in the 'S' and 'V' fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Panic,
    Warning,
    Notice,
    Debug,
    Info,
    Log,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Fatal => "FATAL",
            Self::Panic => "PANIC",
            Self::Warning => "WARNING",
            Self::Notice => "NOTICE",
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Log => "LOG",
        }
    }
}

/// An error or notice the gateway itself sends to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorNotice<'a> {
    pub severity: Severity,
    /// The five-character SQLSTATE, e.g. "28000" or "42501".
    pub code: &'a str,
    pub message: &'a str,
    pub detail: Option<&'a str>,
    pub hint: Option<&'a str>,
}

/// An ErrorResponse ('E'). Writes both 'S' and 'V', so clients of any age find one.
pub fn encode_error(e: &ErrorNotice<'_>, out: &mut BytesMut) {
    encode_fields(b'E', e, out);
}

/// A NoticeResponse ('N').
pub fn encode_notice(e: &ErrorNotice<'_>, out: &mut BytesMut) {
    encode_fields(b'N', e, out);
}

fn encode_fields(tag: u8, e: &ErrorNotice<'_>, out: &mut BytesMut) {
    let severity = e.severity.as_str();
    let fields = [
        (b'S', Some(severity)),
        (b'V', Some(severity)),
        (b'C', Some(e.code)),
        (b'M', Some(e.message)),
        (b'D', e.detail),
        (b'H', e.hint),
    ];
    write_message(out, Some(tag), |o| {
        for (code, value) in fields {
            if let Some(value) = value {
                o.put_u8(code);
                put_cstr(o, value.as_bytes());
            }
        }
        o.put_u8(0);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice<'a>(detail: Option<&'a str>, hint: Option<&'a str>) -> ErrorNotice<'a> {
        ErrorNotice {
            severity: Severity::Fatal,
            code: "28000",
            message: "access denied",
            detail,
            hint,
        }
    }

    #[test]
    fn fields_parse_in_order_and_accessors_find_them() {
        let f = ErrorFields::parse(b"SERROR\0VERROR\0C42501\0Mno\0Zfuture\0\0", "t").unwrap();
        assert_eq!(f.severity(), Some("ERROR"));
        assert_eq!(f.code(), Some("42501"));
        assert_eq!(f.message(), Some("no"));
        assert_eq!(f.detail(), None);
        assert_eq!(f.get(b'Z'), Some("future"));
        assert_eq!(f.fields().len(), 5);
    }

    #[test]
    fn severity_falls_back_to_localized_field() {
        let f = ErrorFields::parse(b"SFEHLER\0\0", "t").unwrap();
        assert_eq!(f.severity(), Some("FEHLER"));
    }

    #[test]
    fn malformed_field_lists_are_refused() {
        fn t(b: &[u8]) -> Result<ErrorFields<'_>, WireError> {
            ErrorFields::parse(b, "t")
        }
        assert_eq!(t(b"SERROR\0"), Err(WireError::Truncated { what: "t" }));
        assert_eq!(t(b"SERROR"), Err(WireError::MissingNul));
        assert_eq!(t(b""), Err(WireError::Truncated { what: "t" }));
        assert_eq!(
            t(b"\0x"),
            Err(WireError::TrailingData {
                what: "t",
                extra: 1
            })
        );
        assert_eq!(t(b"M\xff\0\0"), Err(WireError::InvalidUtf8));
    }

    #[test]
    fn encoded_fields_parse_back() {
        let mut out = BytesMut::new();
        encode_error(
            &notice(Some("no rule matched"), Some("ask for access")),
            &mut out,
        );
        assert_eq!(out.first(), Some(&b'E'));
        let f = ErrorFields::parse(&out[5..], "t").unwrap();
        let codes: Vec<u8> = f.fields().iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, b"SVCMDH");
        assert_eq!(f.severity(), Some("FATAL"));
        assert_eq!(f.get(b'S'), Some("FATAL"));
        assert_eq!(f.detail(), Some("no rule matched"));
        assert_eq!(f.hint(), Some("ask for access"));

        let mut out = BytesMut::new();
        encode_notice(&notice(None, None), &mut out);
        assert_eq!(out.first(), Some(&b'N'));
        let f = ErrorFields::parse(&out[5..], "t").unwrap();
        assert_eq!(f.fields().len(), 4);
    }

    #[test]
    fn interior_nul_cannot_forge_a_field() {
        let mut out = BytesMut::new();
        let mut e = notice(None, None);
        e.message = "denied\0C00000\0";
        encode_error(&e, &mut out);
        let f = ErrorFields::parse(&out[5..], "t").unwrap();
        assert_eq!(f.message(), Some("denied"));
        assert_eq!(f.code(), Some("28000"));
    }
}
