//! Server-to-client messages: typed views over a [`Frame`] body, and encoders for the
//! messages the gateway sends to its clients on its own account.
//!
//! Parsing checks structure only: fixed fields present, strings NUL-terminated UTF-8,
//! counts bounded by the body, nothing left over. It does not check that a message is
//! valid in the current protocol state (e.g. DataRow before RowDescription); the
//! session's state machine does that. Authentication requests (`auth`), error and
//! notice fields (`notice`), result rows (`rows`) and command tags (`command_tag`) live
//! in their own files and are re-exported here.

use bytes::{BufMut, BytesMut};

use super::WireError;
use super::frame::Frame;
use super::reader::Reader;
use super::rows::{parse_data_row, parse_row_description};
use super::writer::{Unrepresentable, put_cstr, write_message};

pub use super::auth::{Authentication, encode_auth_cleartext_request, encode_auth_ok};
pub use super::command_tag::command_tag_rows;
pub use super::notice::{ErrorFields, ErrorNotice, Severity, encode_error, encode_notice};
pub use super::rows::{DataRowValues, FieldDescription, encode_data_row, encode_row_description};

/// A message from a server, borrowing from the frame it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    Authentication(Authentication<'a>),
    BackendKeyData {
        process_id: i32,
        secret_key: i32,
    },
    ParameterStatus {
        name: &'a str,
        value: &'a str,
    },
    /// `status` is `b'I'` (idle), `b'T'` (in a transaction) or `b'E'` (failed transaction).
    ReadyForQuery {
        status: u8,
    },
    CommandComplete {
        tag: &'a str,
    },
    EmptyQueryResponse,
    PortalSuspended,
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    ErrorResponse(ErrorFields<'a>),
    NoticeResponse(ErrorFields<'a>),
    RowDescription {
        fields: Vec<FieldDescription<'a>>,
    },
    DataRow {
        columns: Vec<Option<&'a [u8]>>,
    },
    ParameterDescription {
        types: Vec<u32>,
    },
    CopyInResponse {
        format: i8,
        column_formats: Vec<i16>,
    },
    CopyOutResponse {
        format: i8,
        column_formats: Vec<i16>,
    },
    CopyBothResponse {
        format: i8,
        column_formats: Vec<i16>,
    },
    CopyData {
        data: &'a [u8],
    },
    CopyDone,
    NotificationResponse {
        process_id: i32,
        channel: &'a str,
        payload: &'a str,
    },
    NegotiateProtocolVersion {
        newest_minor: i32,
        unrecognized: Vec<&'a str>,
    },
    /// 'V'; the reply to a fast-path call. Its body is not decoded.
    FunctionCallResponse,
}

impl<'a> BackendMessage<'a> {
    pub fn parse(frame: &'a Frame) -> Result<Self, WireError> {
        let body = frame.body();
        let mut r = Reader::new(body, name(frame.tag));
        let msg = match frame.tag {
            b'R' => return Authentication::parse(body).map(Self::Authentication),
            b'E' => return ErrorFields::parse(body, "ErrorResponse").map(Self::ErrorResponse),
            b'N' => return ErrorFields::parse(body, "NoticeResponse").map(Self::NoticeResponse),
            b'K' => Self::BackendKeyData {
                process_id: r.i32()?,
                secret_key: r.i32()?,
            },
            b'S' => Self::ParameterStatus {
                name: r.cstr()?,
                value: r.cstr()?,
            },
            b'Z' => match r.u8()? {
                status @ (b'I' | b'T' | b'E') => Self::ReadyForQuery { status },
                other => return Err(WireError::InvalidTransactionStatus(other)),
            },
            b'C' => Self::CommandComplete { tag: r.cstr()? },
            b'I' => Self::EmptyQueryResponse,
            b's' => Self::PortalSuspended,
            b'1' => Self::ParseComplete,
            b'2' => Self::BindComplete,
            b'3' => Self::CloseComplete,
            b'n' => Self::NoData,
            b'c' => Self::CopyDone,
            b'V' => {
                r.rest();
                Self::FunctionCallResponse
            }
            b'd' => Self::CopyData { data: r.rest() },
            b'T' => Self::RowDescription {
                fields: parse_row_description(&mut r)?,
            },
            b'D' => Self::DataRow {
                columns: parse_data_row(&mut r)?,
            },
            b't' => {
                let n = r.count16(4)?;
                Self::ParameterDescription {
                    types: r.items(n, Reader::u32)?,
                }
            }
            b'G' | b'H' | b'W' => {
                let format = i8::from_be_bytes(r.array()?);
                let n = r.count16(2)?;
                let column_formats = r.items(n, Reader::i16)?;
                match frame.tag {
                    b'G' => Self::CopyInResponse {
                        format,
                        column_formats,
                    },
                    b'H' => Self::CopyOutResponse {
                        format,
                        column_formats,
                    },
                    _ => Self::CopyBothResponse {
                        format,
                        column_formats,
                    },
                }
            }
            b'A' => Self::NotificationResponse {
                process_id: r.i32()?,
                channel: r.cstr()?,
                payload: r.cstr()?,
            },
            b'v' => {
                let newest_minor = r.i32()?;
                let n = r.count32(1)?;
                Self::NegotiateProtocolVersion {
                    newest_minor,
                    unrecognized: r.items(n, Reader::cstr)?,
                }
            }
            tag => return Err(WireError::UnexpectedMessage { tag }),
        };
        r.finish()?;
        Ok(msg)
    }
}

/// Message names for error reports.
fn name(tag: u8) -> &'static str {
    match tag {
        b'K' => "BackendKeyData",
        b'S' => "ParameterStatus",
        b'Z' => "ReadyForQuery",
        b'C' => "CommandComplete",
        b'T' => "RowDescription",
        b'D' => "DataRow",
        b't' => "ParameterDescription",
        b'G' | b'H' | b'W' => "CopyResponse",
        b'A' => "NotificationResponse",
        b'v' => "NegotiateProtocolVersion",
        _ => "backend message",
    }
}

pub fn encode_parameter_status(name: &str, value: &str, out: &mut BytesMut) {
    write_message(out, Some(b'S'), |o| {
        put_cstr(o, name.as_bytes());
        put_cstr(o, value.as_bytes());
        Ok(())
    });
}

pub fn encode_backend_key_data(process_id: i32, secret_key: i32, out: &mut BytesMut) {
    write_message(out, Some(b'K'), |o| {
        o.put_i32(process_id);
        o.put_i32(secret_key);
        Ok(())
    });
}

/// `status` should be `b'I'`, `b'T'` or `b'E'`; it is written as given.
pub fn encode_ready_for_query(status: u8, out: &mut BytesMut) {
    write_message(out, Some(b'Z'), |o| {
        o.put_u8(status);
        Ok(())
    });
}

/// CopyData. Data over what a message's length holds is not written (see `writer`).
pub fn encode_copy_data(data: &[u8], out: &mut BytesMut) {
    write_message(out, Some(b'd'), |o| {
        o.put_slice(data);
        Ok(())
    });
}

pub fn encode_command_complete(tag: &str, out: &mut BytesMut) {
    write_message(out, Some(b'C'), |o| {
        put_cstr(o, tag.as_bytes());
        Ok(())
    });
}

/// NegotiateProtocolVersion: the newest minor version of protocol 3 we support, and the
/// `_pq_.` startup options we did not recognise.
pub fn encode_negotiate_protocol_version(
    newest_minor: i32,
    unrecognized: &[&str],
    out: &mut BytesMut,
) {
    write_message(out, Some(b'v'), |o| {
        o.put_i32(newest_minor);
        o.put_i32(i32::try_from(unrecognized.len()).map_err(|_| Unrepresentable)?);
        unrecognized.iter().for_each(|s| put_cstr(o, s.as_bytes()));
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wire::test_util::{frame, parse_one};

    fn parse(tag: u8, body: &[u8]) -> Result<String, WireError> {
        BackendMessage::parse(&frame(tag, body)).map(|m| format!("{m:?}"))
    }

    #[test]
    fn encoders_round_trip() {
        let mut buf = BytesMut::new();
        encode_parameter_status("server_version", "17.2", &mut buf);
        let expected = r#"ParameterStatus { name: "server_version", value: "17.2" }"#;
        assert_eq!(parse_one(&mut buf), expected);
        encode_backend_key_data(42, -7, &mut buf);
        let expected = "BackendKeyData { process_id: 42, secret_key: -7 }";
        assert_eq!(parse_one(&mut buf), expected);
        for (status, expected) in [(b'I', "73"), (b'T', "84"), (b'E', "69")] {
            encode_ready_for_query(status, &mut buf);
            let expected = format!("ReadyForQuery {{ status: {expected} }}");
            assert_eq!(parse_one(&mut buf), expected);
        }
        encode_command_complete("INSERT 0 5", &mut buf);
        assert_eq!(
            parse_one(&mut buf),
            r#"CommandComplete { tag: "INSERT 0 5" }"#
        );
        encode_negotiate_protocol_version(0, &["_pq_.x", "_pq_.y"], &mut buf);
        let expected =
            r#"NegotiateProtocolVersion { newest_minor: 0, unrecognized: ["_pq_.x", "_pq_.y"] }"#;
        assert_eq!(parse_one(&mut buf), expected);
    }

    #[test]
    fn auth_and_error_encoders_round_trip_through_frames() {
        let mut buf = BytesMut::new();
        encode_auth_cleartext_request(&mut buf);
        assert_eq!(parse_one(&mut buf), "Authentication(CleartextPassword)");
        encode_auth_ok(&mut buf);
        assert_eq!(parse_one(&mut buf), "Authentication(Ok)");
        encode_copy_data(b"row", &mut buf);
        assert_eq!(parse_one(&mut buf), "CopyData { data: [114, 111, 119] }");

        let e = ErrorNotice {
            severity: Severity::Error,
            code: "42501",
            message: "permission denied",
            detail: None,
            hint: None,
        };
        encode_error(&e, &mut buf);
        let f = crate::pg::wire::decode_frame(&mut buf, 1024)
            .unwrap()
            .unwrap();
        let Ok(BackendMessage::ErrorResponse(fields)) = BackendMessage::parse(&f) else {
            panic!("not an ErrorResponse")
        };
        assert_eq!(fields.severity(), Some("ERROR"));
        assert_eq!(fields.code(), Some("42501"));
        assert_eq!(fields.message(), Some("permission denied"));
        let warning = ErrorNotice {
            severity: Severity::Warning,
            ..e
        };
        encode_notice(&warning, &mut buf);
        assert!(
            parse_one(&mut buf)
                .starts_with(r#"NoticeResponse(ErrorFields { fields: [(83, "WARNING")"#)
        );
    }

    #[test]
    fn parses_every_other_message() {
        let cases: [(u8, &[u8], &str); 14] = [
            (
                b't',
                b"\0\x01\0\0\0\x19",
                "ParameterDescription { types: [25] }",
            ),
            (
                b'G',
                b"\0\0\x01\0\0",
                "CopyInResponse { format: 0, column_formats: [0] }",
            ),
            (
                b'H',
                b"\x01\0\0",
                "CopyOutResponse { format: 1, column_formats: [] }",
            ),
            (
                b'W',
                b"\0\0\0",
                "CopyBothResponse { format: 0, column_formats: [] }",
            ),
            (
                b'A',
                b"\0\0\0\x09ch\0hi\0",
                r#"NotificationResponse { process_id: 9, channel: "ch", payload: "hi" }"#,
            ),
            (b'd', b"row", "CopyData { data: [114, 111, 119] }"),
            (b'c', b"", "CopyDone"),
            (b'I', b"", "EmptyQueryResponse"),
            (b's', b"", "PortalSuspended"),
            (b'1', b"", "ParseComplete"),
            (b'2', b"", "BindComplete"),
            (b'3', b"", "CloseComplete"),
            (b'n', b"", "NoData"),
            (b'V', b"\0\0\0\0", "FunctionCallResponse"),
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
    fn malformed_bodies_are_refused() {
        let err = |tag, body| parse(tag, body).unwrap_err();
        assert_eq!(err(b'Z', b"X"), WireError::InvalidTransactionStatus(b'X'));
        assert!(matches!(
            err(b'Z', b"II"),
            WireError::TrailingData { extra: 1, .. }
        ));
        assert!(matches!(
            err(b'K', b"\0\0\0\x01"),
            WireError::Truncated { .. }
        ));
        assert_eq!(err(b'C', b"SELECT 1"), WireError::MissingNul);
        assert_eq!(err(b'S', b"a\0\xff\0"), WireError::InvalidUtf8);
        assert!(matches!(
            err(b'n', b"\0"),
            WireError::TrailingData { extra: 1, .. }
        ));
        assert!(matches!(
            err(b'A', b"\0\0\0\x09ch\0"),
            WireError::MissingNul
        ));
        assert_eq!(err(b'Q', b""), WireError::UnexpectedMessage { tag: b'Q' });
    }

    #[test]
    fn huge_counts_with_tiny_bodies_are_refused() {
        for (tag, body) in [
            (b't', &b"\x00\x02\0\0\0\x17"[..]),
            (b'G', b"\0\xff\xff"),
            (b'v', b"\0\0\0\0\x7f\xff\xff\xff\0"),
            (b'v', b"\0\0\0\0\xff\xff\xff\xff"),
        ] {
            let got = parse(tag, body);
            let ok = matches!(got, Err(WireError::CountTooLarge { .. }));
            assert!(ok, "tag {}: {got:?}", tag as char);
        }
    }
}
