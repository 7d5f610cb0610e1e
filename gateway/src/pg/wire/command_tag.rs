//! Row counts from CommandComplete tags, for the audit log.
//!
//! The count is what the server reports, not a verified fact, and commands that report
//! no count (DDL, BEGIN, ...) yield `None` rather than 0.

/// The row count in a CommandComplete tag: "INSERT 0 5" -> 5, "SELECT 3" -> 3,
/// "COPY 10" -> 10. `None` for commands that report no count ("CREATE TABLE") and for
/// anything malformed.
pub fn command_tag_rows(tag: &str) -> Option<u64> {
    let (command, rest) = tag.split_once(' ')?;
    let count = match command {
        // The middle word is the OID of the inserted row, always 0 since PostgreSQL 12.
        "INSERT" => {
            let (oid, count) = rest.split_once(' ')?;
            digits(oid)?;
            count
        }
        "SELECT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "FETCH" | "MOVE" => rest,
        _ => return None,
    };
    digits(count)
}

/// Plain ASCII digits only: `u64::from_str` would also take a leading '+', and a count
/// with spaces in it means the tag was not what we think it is.
fn digits(s: &str) -> Option<u64> {
    match s.bytes().all(|b| b.is_ascii_digit()) {
        true => s.parse().ok(),
        false => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tag_rows_cases() {
        let cases = [
            ("INSERT 0 5", Some(5)),
            ("SELECT 3", Some(3)),
            ("COPY 10", Some(10)),
            ("UPDATE 0", Some(0)),
            ("DELETE 18446744073709551615", Some(u64::MAX)),
            ("MERGE 2", Some(2)),
            ("FETCH 1", Some(1)),
            ("MOVE 7", Some(7)),
            ("CREATE TABLE", None),
            ("CREATE TABLE AS", None),
            ("SELECT", None),
            ("INSERT 5", None),
            ("INSERT x 5", None),
            ("SELECT +3", None),
            ("SELECT 3 4", None),
            ("SELECT ", None),
            ("select 3", None),
            ("DELETE 18446744073709551616", None),
            ("BEGIN", None),
            ("", None),
        ];
        for (tag, rows) in cases {
            assert_eq!(command_tag_rows(tag), rows, "{tag:?}");
        }
    }
}
