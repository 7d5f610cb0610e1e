//! Client-to-server messages after startup: typed views over a [`Frame`] body, and
//! encoders for the few messages the gateway itself sends upstream.
//!
//! Parsing checks structure only: every field present, strings NUL-terminated UTF-8,
//! counts bounded by the body, nothing left over. It does not check meaning (that a
//! named statement exists, that format codes are 0 or 1, that SQL is valid); the
//! upstream server does that. The `Debug` impl never prints password bytes or bind
//! parameters. The 'p' message family lives in `password` and is re-exported here.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::WireError;
use super::frame::Frame;
use super::reader::Reader;
use super::writer::{put_cstr, write_message};

pub use super::password::{
    encode_password, encode_sasl_initial_response, encode_sasl_response, password_cleartext,
    sasl_initial_response,
};

/// A message from a client, borrowing from the frame it was parsed from.
#[derive(Clone, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    Query {
        sql: &'a str,
    },
    Parse {
        name: &'a str,
        sql: &'a str,
        param_types: Vec<u32>,
    },
    Bind {
        portal: &'a str,
        statement: &'a str,
        param_formats: Vec<i16>,
        params: Vec<Option<&'a [u8]>>,
        result_formats: Vec<i16>,
    },
    /// `kind` is `b'S'` (statement) or `b'P'` (portal).
    Describe {
        kind: u8,
        name: &'a str,
    },
    Execute {
        portal: &'a str,
        max_rows: i32,
    },
    /// `kind` is `b'S'` (statement) or `b'P'` (portal).
    Close {
        kind: u8,
        name: &'a str,
    },
    Sync,
    Flush,
    Terminate,
    CopyData {
        data: &'a [u8],
    },
    CopyDone,
    CopyFail {
        message: &'a str,
    },
    /// 'F'; the legacy fast-path call. Its body is not decoded.
    FunctionCall,
    /// 'p': PasswordMessage, SASLInitialResponse and SASLResponse share this tag and can
    /// only be told apart by the authentication exchange in progress.
    Password {
        data: &'a [u8],
    },
}

impl<'a> FrontendMessage<'a> {
    pub fn parse(frame: &'a Frame) -> Result<Self, WireError> {
        let body = frame.body();
        let msg = match frame.tag {
            b'Q' => {
                let mut r = Reader::new(body, "Query");
                let sql = r.cstr()?;
                r.finish()?;
                Self::Query { sql }
            }
            b'P' => {
                let mut r = Reader::new(body, "Parse");
                let name = r.cstr()?;
                let sql = r.cstr()?;
                let n = r.count16(4)?;
                let param_types = r.items(n, Reader::u32)?;
                r.finish()?;
                Self::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            b'B' => parse_bind(body)?,
            b'D' | b'C' => {
                let what = if frame.tag == b'D' {
                    "Describe"
                } else {
                    "Close"
                };
                let mut r = Reader::new(body, what);
                let kind = r.u8()?;
                if kind != b'S' && kind != b'P' {
                    return Err(WireError::InvalidKind(kind));
                }
                let name = r.cstr()?;
                r.finish()?;
                if frame.tag == b'D' {
                    Self::Describe { kind, name }
                } else {
                    Self::Close { kind, name }
                }
            }
            b'E' => {
                let mut r = Reader::new(body, "Execute");
                let portal = r.cstr()?;
                let max_rows = r.i32()?;
                r.finish()?;
                Self::Execute { portal, max_rows }
            }
            b'S' => empty(body, "Sync", Self::Sync)?,
            b'H' => empty(body, "Flush", Self::Flush)?,
            b'X' => empty(body, "Terminate", Self::Terminate)?,
            b'c' => empty(body, "CopyDone", Self::CopyDone)?,
            b'd' => Self::CopyData { data: body },
            b'f' => {
                let mut r = Reader::new(body, "CopyFail");
                let message = r.cstr()?;
                r.finish()?;
                Self::CopyFail { message }
            }
            b'F' => Self::FunctionCall,
            b'p' => Self::Password { data: body },
            tag => return Err(WireError::UnexpectedMessage { tag }),
        };
        Ok(msg)
    }
}

fn empty<T>(body: &[u8], what: &'static str, msg: T) -> Result<T, WireError> {
    Reader::new(body, what).finish().map(|()| msg)
}

fn parse_bind(body: &[u8]) -> Result<FrontendMessage<'_>, WireError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let n = r.count16(2)?;
    let param_formats = r.items(n, Reader::i16)?;
    let n = r.count16(4)?;
    let params = r.items(n, Reader::nullable_bytes)?;
    let n = r.count16(2)?;
    let result_formats = r.items(n, Reader::i16)?;
    r.finish()?;
    Ok(FrontendMessage::Bind {
        portal,
        statement,
        param_formats,
        params,
        result_formats,
    })
}

/// Hand-written so that `Password` prints its length, never its bytes.
impl fmt::Debug for FrontendMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Query { sql } => f.debug_struct("Query").field("sql", sql).finish(),
            Self::Parse {
                name,
                sql,
                param_types,
            } => f
                .debug_struct("Parse")
                .field("name", name)
                .field("sql", sql)
                .field("param_types", param_types)
                .finish(),
            Self::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            } => f
                .debug_struct("Bind")
                .field("portal", portal)
                .field("statement", statement)
                .field("param_formats", param_formats)
                .field("params", &params.len())
                .field("result_formats", result_formats)
                .finish(),
            Self::Describe { kind, name } => f
                .debug_struct("Describe")
                .field("kind", &char::from(*kind))
                .field("name", name)
                .finish(),
            Self::Execute { portal, max_rows } => f
                .debug_struct("Execute")
                .field("portal", portal)
                .field("max_rows", max_rows)
                .finish(),
            Self::Close { kind, name } => f
                .debug_struct("Close")
                .field("kind", &char::from(*kind))
                .field("name", name)
                .finish(),
            Self::Sync => f.write_str("Sync"),
            Self::Flush => f.write_str("Flush"),
            Self::Terminate => f.write_str("Terminate"),
            Self::CopyData { data } => f
                .debug_struct("CopyData")
                .field("len", &data.len())
                .finish(),
            Self::CopyDone => f.write_str("CopyDone"),
            Self::CopyFail { message } => f
                .debug_struct("CopyFail")
                .field("message", message)
                .finish(),
            Self::FunctionCall => f.write_str("FunctionCall"),
            Self::Password { data } => f
                .debug_struct("Password")
                .field("len", &data.len())
                .finish(),
        }
    }
}

/// A simple Query; SQL is written up to any interior NUL, as libpq would.
/// A Parse ('P') with no parameter types.
pub fn encode_parse(name: &str, sql: &str, out: &mut BytesMut) {
    write_message(out, Some(b'P'), |o| {
        put_cstr(o, name.as_bytes());
        put_cstr(o, sql.as_bytes());
        o.put_i16(0);
        Ok(())
    });
}

/// An Execute ('E') of `portal`, fetching at most `max_rows` (0 = all).
pub fn encode_execute(portal: &str, max_rows: i32, out: &mut BytesMut) {
    write_message(out, Some(b'E'), |o| {
        put_cstr(o, portal.as_bytes());
        o.put_i32(max_rows);
        Ok(())
    });
}

/// A Describe ('D') of a portal (`b'P'`) or prepared statement (`b'S'`).
pub fn encode_describe(kind: u8, name: &str, out: &mut BytesMut) {
    write_message(out, Some(b'D'), |o| {
        o.put_u8(kind);
        put_cstr(o, name.as_bytes());
        Ok(())
    });
}

pub fn encode_query(sql: &str, out: &mut BytesMut) {
    write_message(out, Some(b'Q'), |o| {
        put_cstr(o, sql.as_bytes());
        Ok(())
    });
}

pub fn encode_terminate(out: &mut BytesMut) {
    write_message(out, Some(b'X'), |_| Ok(()));
}

pub fn encode_sync(out: &mut BytesMut) {
    write_message(out, Some(b'S'), |_| Ok(()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wire::test_util::frame;
    use crate::pg::wire::{MAX_MESSAGE_LEN, decode_frame};

    fn parse(tag: u8, body: &[u8]) -> Result<String, WireError> {
        FrontendMessage::parse(&frame(tag, body)).map(|m| format!("{m:?}"))
    }

    #[test]
    fn parse_and_execute_round_trip() {
        let mut buf = BytesMut::new();
        encode_parse("s1", "SELECT 1", &mut buf);
        encode_execute("p1", 5, &mut buf);
        let f = decode_frame(&mut buf, MAX_MESSAGE_LEN).unwrap().unwrap();
        match FrontendMessage::parse(&f).unwrap() {
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            } => {
                assert_eq!((name, sql, param_types.len()), ("s1", "SELECT 1", 0));
            }
            other => panic!("{other:?}"),
        }
        let f = decode_frame(&mut buf, MAX_MESSAGE_LEN).unwrap().unwrap();
        match FrontendMessage::parse(&f).unwrap() {
            FrontendMessage::Execute { portal, max_rows } => {
                assert_eq!((portal, max_rows), ("p1", 5))
            }
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn query_terminate_sync_round_trip() {
        let mut buf = BytesMut::new();
        encode_query("SELECT 'é'", &mut buf);
        encode_terminate(&mut buf);
        encode_sync(&mut buf);
        let mut next = || decode_frame(&mut buf, MAX_MESSAGE_LEN).unwrap().unwrap();
        let f = next();
        let sql = "SELECT 'é'";
        assert_eq!(
            FrontendMessage::parse(&f),
            Ok(FrontendMessage::Query { sql })
        );
        assert_eq!(
            FrontendMessage::parse(&next()),
            Ok(FrontendMessage::Terminate)
        );
        assert_eq!(FrontendMessage::parse(&next()), Ok(FrontendMessage::Sync));
    }

    #[test]
    fn parses_bind_with_values() {
        let body = b"p\0s1\0\0\x01\0\x01\0\x02\0\0\0\x02hi\xff\xff\xff\xff\0\0";
        let f = frame(b'B', body);
        let expected = FrontendMessage::Bind {
            portal: "p",
            statement: "s1",
            param_formats: vec![1],
            params: vec![Some(b"hi"), None],
            result_formats: vec![],
        };
        assert_eq!(FrontendMessage::parse(&f), Ok(expected));
    }

    #[test]
    fn parses_every_other_message() {
        let cases: [(u8, &[u8], &str); 10] = [
            (
                b'P',
                b"s1\0SELECT $1\0\0\x01\0\0\0\x17",
                r#"Parse { name: "s1", sql: "SELECT $1", param_types: [23] }"#,
            ),
            (b'D', b"Sst\0", r#"Describe { kind: 'S', name: "st" }"#),
            (b'C', b"P\0", r#"Close { kind: 'P', name: "" }"#),
            (
                b'E',
                b"\0\0\0\0\x0a",
                r#"Execute { portal: "", max_rows: 10 }"#,
            ),
            (b'H', b"", "Flush"),
            (b'd', b"1\t2\n", "CopyData { len: 4 }"),
            (b'c', b"", "CopyDone"),
            (b'f', b"oops\0", r#"CopyFail { message: "oops" }"#),
            (b'F', b"anything", "FunctionCall"),
            (b'X', b"", "Terminate"),
        ];
        for (tag, body, expected) in cases {
            assert_eq!(
                parse(tag, body).as_deref(),
                Ok(expected),
                "tag {}",
                tag as char
            );
        }
    }

    #[test]
    fn huge_counts_with_tiny_bodies_are_refused() {
        // Bind claiming 65535 parameters in a few bytes.
        let err = parse(b'B', b"\0\0\0\0\xff\xff\0\0").unwrap_err();
        assert!(matches!(err, WireError::CountTooLarge { count: 65535, .. }));
        let err = parse(b'P', b"\0SELECT 1\0\x7f\xff").unwrap_err();
        assert!(matches!(err, WireError::CountTooLarge { .. }));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let err = |tag, body| parse(tag, body).unwrap_err();
        assert_eq!(err(b'Q', b"SELECT 1"), WireError::MissingNul);
        assert!(matches!(
            err(b'Q', b"SELECT 1\0x"),
            WireError::TrailingData { extra: 1, .. }
        ));
        assert_eq!(err(b'Q', b"\xc3\0"), WireError::InvalidUtf8);
        assert!(matches!(
            err(b'S', b"\0"),
            WireError::TrailingData { extra: 1, .. }
        ));
        assert_eq!(err(b'D', b"Xname\0"), WireError::InvalidKind(b'X'));
        assert!(matches!(err(b'E', b"\0\0\0"), WireError::Truncated { .. }));
        let bind = b"\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0";
        assert!(matches!(
            err(b'B', bind),
            WireError::InvalidFieldLength { len: -2, .. }
        ));
        assert_eq!(err(b'Z', b"I"), WireError::UnexpectedMessage { tag: b'Z' });
    }

    #[test]
    fn debug_never_prints_secrets() {
        assert_eq!(parse(b'p', b"hunter2\0").unwrap(), "Password { len: 8 }");
        let bind = parse(b'B', b"\0\0\0\0\0\x01\0\0\0\x07hunter2\0\0").unwrap();
        assert!(!bind.contains("hunter2") && !bind.contains("104"), "{bind}");
    }
}
