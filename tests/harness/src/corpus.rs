//! The guardrail corpora (`tests/corpus/`) and the runners that send them through the
//! gateway.
//!
//! - [`format`]: the entry format shared by `guardrail_attacks.txt` and
//!   `guardrail_legit.txt` (documented at the top of the attack file).
//! - [`arena`]: the fixture attacks aim at, its fingerprint and its repair.
//! - [`attack`]: psql, tokio-postgres and pipelined runs that must each be denied.
//! - [`raw`]: a raw-protocol session for pipelines with a single Sync.
//! - [`legit`]: runs that must succeed with the same results as a direct connection.
//!
//! What this does not show: that the gateway denies *every* way to do these things. The
//! corpus is a regression list of known tricks; attempts the policy does not cover are listed
//! at the end of the attack file.

pub mod arena;
pub mod attack;
pub mod format;
pub mod legit;
pub mod raw;

use std::path::PathBuf;

use anyhow::{Context, Result};

pub use arena::{Arena, FIXTURE_SQL, reseed};
pub use attack::{Rules, run_attacks, run_directly};
pub use format::{Entry, Protocol};
pub use legit::run_legit;

/// `tests/corpus/` in the repository.
pub fn corpus_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../corpus"))
}

/// Reads and parses `tests/corpus/<file>`.
pub fn load(file: &str) -> Result<Vec<Entry>> {
    let path = corpus_dir().join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    format::parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real corpora parse; their size and rule names are checked by the end-to-end test,
    /// which also knows the policy.
    #[test]
    fn repository_corpora_parse() {
        for file in ["guardrail_attacks.txt", "guardrail_legit.txt"] {
            assert!(!load(file).unwrap().is_empty(), "{file}");
        }
    }
}
