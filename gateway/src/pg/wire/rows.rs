//! RowDescription ('T') and DataRow ('D'): the shape of a result set and its rows.
//! Part of `backend`, which re-exports the public items.
//!
//! Parsing bounds the column count by the body before allocating and checks every
//! value length; it does not check that a DataRow matches the preceding
//! RowDescription, nor anything about the values themselves.

use bytes::BytesMut;

use super::WireError;
use super::reader::Reader;
use super::writer::{put_count16, put_nullable, write_message};

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription<'a> {
    pub name: &'a str,
    pub table_oid: u32,
    pub column_id: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    pub format: i16,
}

/// The smallest possible field: an empty name's NUL plus 4 + 2 + 4 + 2 + 4 + 2 bytes.
const MIN_FIELD_LEN: usize = 19;

pub(crate) fn parse_row_description<'a>(
    r: &mut Reader<'a>,
) -> Result<Vec<FieldDescription<'a>>, WireError> {
    let n = r.count16(MIN_FIELD_LEN)?;
    r.items(n, |r| {
        Ok(FieldDescription {
            name: r.cstr()?,
            table_oid: r.u32()?,
            column_id: r.i16()?,
            type_oid: r.u32()?,
            type_size: r.i16()?,
            type_modifier: r.i32()?,
            format: r.i16()?,
        })
    })
}

pub(crate) fn parse_data_row<'a>(r: &mut Reader<'a>) -> Result<Vec<Option<&'a [u8]>>, WireError> {
    let n = r.count16(4)?;
    r.items(n, Reader::nullable_bytes)
}

/// The values of a DataRow body, read in place one at a time: for the masking hot path, which
/// rewrites rows without collecting their columns first. Checks what `parse_data_row` checks.
#[derive(Clone)]
pub struct DataRowValues<'a> {
    r: Reader<'a>,
    left: usize,
}

impl<'a> DataRowValues<'a> {
    pub fn new(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body, "DataRow");
        let left = r.count16(4)?;
        Ok(Self { r, left })
    }

    /// The values of a body already checked whole (see [`DataRowValues::check`]).
    pub fn checked(body: &'a [u8]) -> Result<Self, WireError> {
        let values = Self::new(body)?;
        values.clone().check()?;
        Ok(values)
    }

    /// The number of values not yet read.
    pub fn len(&self) -> usize {
        self.left
    }

    pub fn is_empty(&self) -> bool {
        self.left == 0
    }

    /// Reads every value left and the end of the body: whether the whole row is well formed.
    pub fn check(mut self) -> Result<(), WireError> {
        for value in self.by_ref() {
            value?;
        }
        self.r.finish()
    }
}

/// Stops after the first error.
impl<'a> Iterator for DataRowValues<'a> {
    type Item = Result<Option<&'a [u8]>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.left = self.left.checked_sub(1)?;
        let value = self.r.nullable_bytes();
        if value.is_err() {
            self.left = 0;
        }
        Some(value)
    }
}

/// A RowDescription. More than 65535 fields cannot be encoded (see `writer`).
pub fn encode_row_description(fields: &[FieldDescription<'_>], out: &mut BytesMut) {
    use bytes::BufMut;
    write_message(out, Some(b'T'), |o| {
        put_count16(o, fields.len())?;
        for f in fields {
            super::writer::put_cstr(o, f.name.as_bytes());
            o.put_u32(f.table_oid);
            o.put_i16(f.column_id);
            o.put_u32(f.type_oid);
            o.put_i16(f.type_size);
            o.put_i32(f.type_modifier);
            o.put_i16(f.format);
        }
        Ok(())
    });
}

/// A DataRow. More than 65535 columns, or a message over 2 GiB, cannot be encoded; the
/// row is then not written and the failure is logged (see `writer`).
pub fn encode_data_row(columns: &[Option<&[u8]>], out: &mut BytesMut) {
    write_message(out, Some(b'D'), |o| {
        put_count16(o, columns.len())?;
        columns.iter().try_for_each(|c| put_nullable(o, *c))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::wire::backend::BackendMessage;
    use crate::pg::wire::test_util::{frame, parse_one};

    fn parse(tag: u8, body: &[u8]) -> Result<String, WireError> {
        BackendMessage::parse(&frame(tag, body)).map(|m| format!("{m:?}"))
    }

    #[test]
    fn row_description_round_trips() {
        let fields = vec![
            FieldDescription {
                name: "email",
                table_oid: 16384,
                column_id: 3,
                type_oid: 25,
                type_size: -1,
                type_modifier: -1,
                format: 1,
            },
            FieldDescription {
                name: "",
                table_oid: 0,
                column_id: 0,
                type_oid: 23,
                type_size: 4,
                type_modifier: -1,
                format: 0,
            },
        ];
        let mut out = BytesMut::new();
        encode_row_description(&fields, &mut out);
        let f = crate::pg::wire::test_util::frame(b'T', &out[5..]);
        match BackendMessage::parse(&f).unwrap() {
            BackendMessage::RowDescription { fields: got } => assert_eq!(got, fields),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_row_description() {
        let mut body = b"\0\x01id\0".to_vec();
        body.extend_from_slice(&[
            0, 0, 0x40, 0, 0, 1, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0,
        ]);
        let expected = FieldDescription {
            name: "id",
            table_oid: 0x4000,
            column_id: 1,
            type_oid: 23,
            type_size: 4,
            type_modifier: -1,
            format: 0,
        };
        let f = frame(b'T', &body);
        let fields = vec![expected];
        assert_eq!(
            BackendMessage::parse(&f),
            Ok(BackendMessage::RowDescription { fields })
        );
        // The count fits the body, but the field runs out after its name.
        let short = [&b"\0\x01a_long_name\0"[..], &[0; 10]].concat();
        let err = parse(b'T', &short).unwrap_err();
        assert_eq!(
            err,
            WireError::Truncated {
                what: "RowDescription"
            }
        );
    }

    #[test]
    fn data_row_round_trip() {
        let mut buf = BytesMut::new();
        encode_data_row(&[Some(b"1"), None, Some(b"")], &mut buf);
        let expected = "DataRow { columns: [Some([49]), None, Some([])] }";
        assert_eq!(parse_one(&mut buf), expected);
    }

    #[test]
    fn data_row_values_are_read_in_place_and_checked() {
        let mut buf = BytesMut::new();
        encode_data_row(&[Some(b"1"), None, Some(b"")], &mut buf);
        let values = DataRowValues::new(&buf[5..]).unwrap();
        assert_eq!(values.len(), 3);
        values.clone().check().unwrap();
        let got: Vec<_> = values.map(Result::unwrap).collect();
        assert_eq!(got, [Some(&b"1"[..]), None, Some(&b""[..])]);
        // Reading stops at the first bad value.
        let mut bad = DataRowValues::new(b"\0\x02\xff\xff\xff\x00\xff\xff\xff\xff").unwrap();
        assert!(matches!(bad.next(), Some(Err(_))));
        assert!(bad.next().is_none() && bad.is_empty());
        // The same refusals as parsing the whole row.
        let check = |body: &[u8]| DataRowValues::new(body).and_then(DataRowValues::check);
        assert_eq!(
            check(b"\0\x01\xff\xff\xff\x00"),
            Err(WireError::InvalidFieldLength {
                what: "DataRow",
                len: -256
            })
        );
        assert_eq!(
            check(b"\0\x01\0\0\0\x05ab"),
            Err(WireError::Truncated { what: "DataRow" })
        );
        assert_eq!(
            check(b"\0\0x"),
            Err(WireError::TrailingData {
                what: "DataRow",
                extra: 1
            })
        );
        assert!(matches!(
            check(b"\xff\xff\0\0\0\0"),
            Err(WireError::CountTooLarge { count: 65535, .. })
        ));
    }

    #[test]
    fn malformed_rows_are_refused() {
        let err = parse(b'D', b"\0\x01\xff\xff\xff\x00").unwrap_err();
        assert_eq!(
            err,
            WireError::InvalidFieldLength {
                what: "DataRow",
                len: -256
            }
        );
        let err = parse(b'D', b"\0\x01\0\0\0\x05ab").unwrap_err();
        assert_eq!(err, WireError::Truncated { what: "DataRow" });
        let err = parse(b'D', b"\0\0x").unwrap_err();
        assert_eq!(
            err,
            WireError::TrailingData {
                what: "DataRow",
                extra: 1
            }
        );
    }

    #[test]
    fn huge_column_counts_with_tiny_bodies_are_refused() {
        let err = parse(b'D', b"\xff\xff\0\0\0\0").unwrap_err();
        assert!(matches!(err, WireError::CountTooLarge { count: 65535, .. }));
        // One field needs 19 bytes; 18 are not enough for a count of 1.
        let err = parse(b'T', &[&[0u8, 1][..], &[0; 18]].concat()).unwrap_err();
        assert!(matches!(err, WireError::CountTooLarge { count: 1, .. }));
    }

    #[test]
    fn data_row_with_too_many_columns_is_not_written() {
        let columns = vec![None; 65_536];
        let mut buf = BytesMut::from(&b"prior"[..]);
        encode_data_row(&columns, &mut buf);
        assert_eq!(&buf[..], b"prior");
        // 65535 is the most a DataRow can carry, and it round-trips.
        let mut buf = BytesMut::new();
        encode_data_row(&columns[1..], &mut buf);
        let f = crate::pg::wire::decode_frame(&mut buf, 1 << 20)
            .unwrap()
            .unwrap();
        let Ok(BackendMessage::DataRow { columns }) = BackendMessage::parse(&f) else {
            panic!("not a DataRow")
        };
        assert_eq!(columns.len(), 65_535);
    }
}
