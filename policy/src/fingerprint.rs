//! Statement fingerprints: one hex string per statement *shape*.
//!
//! Constants are ignored (`WHERE id = 1` and `WHERE id = 2` share a fingerprint), which is
//! the point: an approval may cover "this statement, whatever the values". Relation names
//! are not: we ask pg_query for Postgres 17 style fingerprints with full relation names, so
//! the schema, the table (not its alias) and digits in its name all count. pg_query's default
//! (Postgres 18 query-id rules) would let `DELETE FROM accounts a` and `DELETE FROM payments a`,
//! or `public.t` and `audit.t`, share one fingerprint, and thereby one approval.
//!
//! Not guaranteed: the fingerprint is syntactic. Two statements of one shape can do different
//! things (a function behind a name may change, `search_path` may differ between sessions).

use pg_query::FingerprintOptions;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The fingerprint of `sql` in hex; `None` if it does not parse (or pg_query panics).
pub fn fingerprint(sql: &str) -> Option<String> {
    let options = FingerprintOptions::RANGEVAR_PG17_COMPAT | FingerprintOptions::FULL_RELNAME;
    catch_unwind(AssertUnwindSafe(|| {
        pg_query::fingerprint(sql, pg_query::ParserOptions::DEFAULT, options)
    }))
    .ok()?
    .ok()
    .map(|f| f.hex)
}
