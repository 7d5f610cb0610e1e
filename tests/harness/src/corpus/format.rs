//! The corpus text format (documented at the top of `tests/corpus/guardrail_attacks.txt`):
//! entries opened by a `-- @@` line, each a block of `-- key: value` headers followed by SQL,
//! the list closed by `-- @@ end`.
//!
//! Parsing is strict so that a typo cannot silently drop or weaken an entry: unknown header
//! keys, duplicate names, empty SQL, unknown protocols and anything but comments after
//! `-- @@ end` are errors, all reported at once.

use std::fmt;

use anyhow::{Result, bail};

/// Opens an entry.
const SEPARATOR: &str = "-- @@";
/// Closes the list.
const END: &str = "-- @@ end";

/// How an entry is sent (see the format description).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Simple,
    Extended,
    Pipeline,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Simple, Protocol::Extended, Protocol::Pipeline];

    fn parse(word: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == word)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::Pipeline => "pipeline",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One corpus entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// 1-based line of the entry's `-- @@`, for messages.
    pub line: usize,
    pub protocols: Vec<Protocol>,
    /// Guardrails that match the entry (attacks).
    pub rules: Vec<String>,
    /// Statements run first in the same session (attacks).
    pub setup: Vec<String>,
    /// Text parameters (legit, extended protocol).
    pub params: Vec<String>,
    /// Lines for psql's standard input (legit, simple protocol).
    pub stdin: Vec<String>,
    /// The SQL, sent verbatim as one message.
    pub sql: String,
}

impl Entry {
    pub fn runs(&self, protocol: Protocol) -> bool {
        self.protocols.contains(&protocol)
    }
}

impl fmt::Display for Entry {
    /// `name (line N)`: how failures name an entry.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (line {})", self.name, self.line)
    }
}

/// Parses a corpus file's text; `what` names it in error messages.
pub fn parse(text: &str, what: &str) -> Result<Vec<Entry>> {
    let mut problems = Vec::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut block: Option<(usize, Vec<&str>)> = None;
    let mut ended = false;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_end();
        if ended {
            if !(trimmed.is_empty() || trimmed.starts_with("--")) {
                problems.push(format!("line {number}: only comments may follow `{END}`"));
            }
        } else if trimmed == END || trimmed == SEPARATOR {
            if let Some((start, lines)) = block.take() {
                match parse_entry(start, &lines) {
                    Ok(entry) => entries.push(entry),
                    Err(e) => problems.push(format!("{e:#}")),
                }
            }
            ended = trimmed == END;
            if !ended {
                block = Some((number, Vec::new()));
            }
        } else if let Some((_, lines)) = &mut block {
            lines.push(line);
        }
    }
    if !ended {
        problems.push(format!("no `{END}` line"));
    }
    let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    for pair in names.windows(2) {
        if pair[0] == pair[1] {
            problems.push(format!("duplicate name {}", pair[0]));
        }
    }
    if !problems.is_empty() {
        bail!("{what} is malformed:\n  {}", problems.join("\n  "));
    }
    Ok(entries)
}

fn parse_entry(start: usize, lines: &[&str]) -> Result<Entry> {
    let mut entry = Entry {
        name: String::new(),
        line: start,
        protocols: Vec::new(),
        rules: Vec::new(),
        setup: Vec::new(),
        params: Vec::new(),
        stdin: Vec::new(),
        sql: String::new(),
    };
    let mut body_start = lines.len();
    for (i, line) in lines.iter().enumerate() {
        let Some((key, value)) = header(line) else {
            body_start = i;
            break;
        };
        let at = start + i + 1;
        let list = || value.split(',').map(|v| v.trim().to_owned());
        match key {
            "name" if entry.name.is_empty() => entry.name = value.trim().to_owned(),
            "name" => bail!("line {at}: second name"),
            "protocols" => {
                for word in list() {
                    match Protocol::parse(&word) {
                        Some(p) => entry.protocols.push(p),
                        None => bail!("line {at}: unknown protocol {word:?}"),
                    }
                }
            }
            "rule" => entry.rules.extend(list()),
            "setup" => entry.setup.push(value.trim().to_owned()),
            "param" => entry.params.push(value.to_owned()),
            "stdin" => entry.stdin.push(value.to_owned()),
            "note" => {}
            other => bail!("line {at}: unknown header key {other:?}"),
        }
    }
    entry.sql = lines[body_start..].join("\n").trim().to_owned();
    let valid_name = !entry.name.is_empty()
        && entry
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name {
        bail!(
            "entry at line {start}: missing or invalid name {:?}",
            entry.name
        );
    }
    if entry.protocols.is_empty() {
        bail!("{entry}: no protocols");
    }
    if entry.sql.is_empty() {
        bail!("{entry}: no SQL");
    }
    Ok(entry)
}

/// `-- key: value` with `key` made of lower-case letters, or `None` for a SQL line. A
/// header-shaped line with an unknown key still counts, so the caller can reject it.
fn header(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.strip_prefix("-- ")?.split_once(':')?;
    let keyish = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase());
    keyish.then(|| (key, value.strip_prefix(' ').unwrap_or(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "preamble -- @@ ignored\n-- @@\n-- name: a-1\n-- protocols: simple, extended\n-- rule: r1,r2\n-- setup: SET x = 1\n-- note: anything\n\nSELECT 1;\n-- trailing comment kept\n\n-- @@\n-- name: b\n-- protocols: pipeline\n-- param: p, with comma\n-- stdin: a\tb\n-- a comment\nDELETE FROM t\n-- @@ end\n-- out of scope notes\n";

    #[test]
    fn parses_entries() {
        let entries = parse(SAMPLE, "sample").unwrap();
        assert_eq!(entries.len(), 2);
        let a = &entries[0];
        assert_eq!((a.name.as_str(), a.line), ("a-1", 2));
        assert_eq!(a.protocols, [Protocol::Simple, Protocol::Extended]);
        assert_eq!(a.rules, ["r1", "r2"]);
        assert_eq!(a.setup, ["SET x = 1"]);
        assert_eq!(a.sql, "SELECT 1;\n-- trailing comment kept");
        let b = &entries[1];
        assert!(b.runs(Protocol::Pipeline) && !b.runs(Protocol::Simple));
        assert_eq!(b.params, ["p, with comma"]);
        assert_eq!(b.stdin, ["a\tb"]);
        assert_eq!(b.sql, "-- a comment\nDELETE FROM t");
        assert_eq!(b.to_string(), "b (line 12)");
    }

    #[test]
    fn rejects_sloppy_corpora() {
        let cases = [
            (
                "-- @@\n-- name: a\n-- protocols: simple\nSELECT 1\n",
                "no `-- @@ end`",
            ),
            (
                "-- @@\n-- name: a\n-- protocol: simple\nSELECT 1\n-- @@ end\n",
                "unknown header",
            ),
            (
                "-- @@\n-- name: a\n-- protocols: smple\nSELECT 1\n-- @@ end\n",
                "unknown protocol",
            ),
            (
                "-- @@\n-- name: a\n-- protocols: simple\n\n-- @@ end\n",
                "no SQL",
            ),
            (
                "-- @@\n-- name: A b\n-- protocols: simple\nSELECT\n-- @@ end\n",
                "invalid name",
            ),
            (
                "-- @@\n-- protocols: simple\nSELECT 1\n-- @@ end\n",
                "missing or invalid name",
            ),
            ("-- @@\n-- name: a\nSELECT 1\n-- @@ end\n", "no protocols"),
            (
                "-- @@\n-- name: a\n-- protocols: simple\nSELECT 1\n-- @@ end\nSELECT 2\n",
                "only comments",
            ),
            (
                "-- @@\n-- name: a\n-- protocols: simple\nSELECT 1\n-- @@\n-- name: a\n-- protocols: simple\nSELECT 2\n-- @@ end\n",
                "duplicate name a",
            ),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", parse(text, "bad").unwrap_err());
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
    }
}
