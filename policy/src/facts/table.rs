//! Relation references and `COPY` direction.
//!
//! Names are PostgreSQL's: unquoted identifiers arrive already folded to lower case, quoted ones
//! keep their case. A catalog (database) qualifier is dropped. Not guaranteed: which schema an
//! unqualified name resolves to — that depends on the session's `search_path`.

use serde::{Deserialize, Serialize};

/// A relation (table, view, sequence, index, ...) as the statement names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableRef {
    pub schema: Option<String>,
    pub name: String,
}

impl TableRef {
    pub fn new(schema: Option<&str>, name: &str) -> Self {
        Self {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// From a qualified name's parts (`[name]`, `[schema, name]` or `[catalog, schema, name]`).
    pub(crate) fn from_parts(parts: &[&str]) -> Option<Self> {
        match parts {
            [] => None,
            [name] => Some(Self::new(None, name)),
            [.., schema, name] => Some(Self::new(Some(schema), name)),
        }
    }
}

impl std::fmt::Display for TableRef {
    /// `schema.name`, or `name` when unqualified. Not quoted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Which way a `COPY` moves data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CopyDirection {
    /// `COPY ... FROM`: into a table.
    From,
    /// `COPY ... TO`: out of a table or query.
    To,
}
