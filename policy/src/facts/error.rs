//! Why classification of a statement string failed.
//!
//! Only the text of these errors leaves the crate (as `StatementFacts::parse_error`); the enum
//! keeps the causes apart inside it. Messages never include the statement text itself, so they
//! are safe to log, but they may quote a token near the syntax error.

/// A failure to turn SQL text into statement facts.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClassifyError {
    /// PostgreSQL's grammar rejected the text (the message is PostgreSQL's own).
    #[error("{0}")]
    Syntax(String),
    /// The statement text contains a NUL byte, which no PostgreSQL statement can.
    #[error("statement text contains a NUL byte")]
    NulByte,
    /// The tree was too deeply nested for the protobuf decoder behind `pg_query` (which stops
    /// at 100 nested messages), so it could not be analysed.
    #[error("statement is nested too deeply to analyse")]
    TooDeep,
    /// Any other failure inside `pg_query`.
    #[error("parser failure: {0}")]
    Parser(String),
    /// The parser panicked; caught so one statement cannot take the gateway down.
    #[error("parser panicked")]
    Panicked,
    /// Converting the parse tree for analysis failed (never expected).
    #[error("parse tree conversion failed: {0}")]
    Tree(String),
}

impl From<pg_query::Error> for ClassifyError {
    fn from(err: pg_query::Error) -> Self {
        match err {
            pg_query::Error::Parse(msg) | pg_query::Error::Split(msg) => ClassifyError::Syntax(msg),
            pg_query::Error::Conversion(_) => ClassifyError::NulByte,
            pg_query::Error::Decode(_) => ClassifyError::TooDeep,
            other => ClassifyError::Parser(truncate(&other.to_string(), 200)),
        }
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}
