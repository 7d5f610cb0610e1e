//! A bounded LRU of statement facts, keyed by the exact statement text.
//!
//! Classifying costs tens of microseconds; applications send the same texts over and over
//! (prepared statements, ORMs, pgbench), so the gateway keeps one of these per session or
//! behind a lock. Keying prepared statements by name is the caller's business.
//!
//! A second LRU is keyed by the statement's *shape*: the text with the bytes of every constant
//! token (`42`, `1.5`, `'abc'`, `$$x$$`, `B'01'`, `X'ff'`, `U&'x'`) replaced by a marker of the
//! token's type, as PostgreSQL's own lexer (`pg_query::scan_tokens`) finds them. Applications
//! that send their values inline (`-M simple`, most ad-hoc SQL) send a new text per statement,
//! but only a few shapes; a lexer pass costs a fraction of a parse.
//!
//! Why a shape hit is sound: two texts with the same shape are byte-identical outside their
//! constants, and their constants are tokens of the same types at the same places, so their
//! token streams differ only in constant values and they parse to the same tree up to those
//! values. Facts are read from the tree, and for most statements never from a constant's value.
//! Where they are (a `set_config` call's setting name, `EXPLAIN`'s and `COPY`'s option values, a
//! `DO` block's body), the shape is not used: facts are stored under their shape only when
//! [`shape_determines_facts`] holds, which admits plain `SELECT`/`INSERT`/`UPDATE`/`DELETE`/
//! `MERGE` (nested ones included) that call no `set_config`, and never a parse failure. Texts with
//! a backslash are never looked up by shape: `standard_conforming_strings` changes how they lex.
//! (The approval `fingerprint` is no key for this: it ignores more than constant values and
//! costs a full parse.)
//! The policy tests (`shape_cache` in this module and `tests/shape_cache.rs`) classify every
//! statement of a corpus with its constants varied and check that an admitted shape's facts
//! are the facts of each variant.
//!
//! Not guaranteed: memory is bounded by entry count, not bytes. Texts longer than
//! [`MAX_CACHED_SQL_LEN`] are classified every time and never stored, so one entry's key is at
//! most that size. The exact key is the byte-exact text: `select 1` and `SELECT 1` are two
//! entries. A text whose constant PostgreSQL would reject (an out-of-range value where the
//! grammar checks it) gets the facts of its shape rather than a parse error; the server rejects
//! it all the same, so it does not run.

use std::sync::Arc;

use lru::LruCache;

use crate::facts::{ClassifyOptions, StatementFacts, StatementKind, classify_with};

/// Statement texts longer than this (in bytes) are not cached.
pub const MAX_CACHED_SQL_LEN: usize = 64 * 1024;

/// Hit and miss counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Found by exact text.
    pub hits: u64,
    /// Found by shape (see the module documentation).
    pub shape_hits: u64,
    /// Classified.
    pub misses: u64,
}

/// A bounded LRU from statement text to its facts.
pub struct FactsCache {
    /// By exact text. Both maps are bounded by hand to `capacity` rather than by the LRU
    /// itself, which would allocate its whole table up front: a session that is idle, or never
    /// sends a shape, costs no table.
    entries: LruCache<String, Arc<StatementFacts>>,
    /// By shape; only facts that [`shape_determines_facts`] admits.
    shapes: LruCache<String, Arc<StatementFacts>>,
    capacity: usize,
    options: ClassifyOptions,
    stats: CacheStats,
}

impl FactsCache {
    /// A cache holding at most `capacity` statements (0 disables caching), parsing with
    /// default [`ClassifyOptions`].
    pub fn new(capacity: usize) -> Self {
        Self::with_options(capacity, ClassifyOptions::default())
    }

    pub fn with_options(capacity: usize, options: ClassifyOptions) -> Self {
        Self {
            entries: LruCache::unbounded(),
            shapes: LruCache::unbounded(),
            capacity,
            options,
            stats: CacheStats::default(),
        }
    }

    /// Changes the session options; the entries were parsed under the old ones, so a change
    /// empties the cache.
    pub fn set_options(&mut self, options: ClassifyOptions) {
        if options != self.options {
            self.options = options;
            self.entries.clear();
            self.shapes.clear();
        }
    }

    pub fn options(&self) -> ClassifyOptions {
        self.options
    }

    /// The facts for `sql`, from the cache or freshly classified (and then cached).
    pub fn get_or_classify(&mut self, sql: &str) -> Arc<StatementFacts> {
        if let Some(facts) = self.entries.get(sql) {
            self.stats.hits += 1;
            return Arc::clone(facts);
        }
        let cacheable = self.capacity > 0 && sql.len() <= MAX_CACHED_SQL_LEN;
        let shape = cacheable.then(|| shape_key(sql)).flatten();
        if let Some(key) = &shape
            && let Some(facts) = self.shapes.get(key)
        {
            self.stats.shape_hits += 1;
            return Arc::clone(facts);
        }
        self.stats.misses += 1;
        let facts = Arc::new(classify_with(sql, self.options));
        if cacheable {
            put_bounded(&mut self.entries, self.capacity, sql.to_owned(), &facts);
            if let Some(key) = shape
                && shape_determines_facts(&facts)
            {
                put_bounded(&mut self.shapes, self.capacity, key, &facts);
            }
        }
        facts
    }

    /// Entries by exact text.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

/// Inserts, then evicts the least recently used entries beyond `capacity`.
fn put_bounded(
    lru: &mut LruCache<String, Arc<StatementFacts>>,
    capacity: usize,
    key: String,
    facts: &Arc<StatementFacts>,
) {
    lru.put(key, Arc::clone(facts));
    while lru.len() > capacity {
        lru.pop_lru();
    }
}

/// `sql` with each constant token's bytes replaced by `\0` and a letter for the token's type,
/// or `None` when the text has no constant (the exact cache covers it), has a backslash (its
/// lexing depends on `standard_conforming_strings`), or does not lex. `\0` cannot occur in a
/// statement text (the protocol ends strings with it), so a marker never collides with text.
pub fn shape_key(sql: &str) -> Option<String> {
    use pg_query::protobuf::Token;
    if sql.contains('\\') || sql.contains('\0') {
        return None;
    }
    let tokens = std::panic::catch_unwind(|| pg_query::scan_tokens(sql))
        .ok()?
        .ok()?;
    let mut key = String::with_capacity(sql.len());
    let mut at = 0;
    for t in &tokens {
        let marker = match Token::try_from(t.token) {
            Ok(Token::Iconst) => 'i',
            Ok(Token::Fconst) => 'f',
            Ok(Token::Sconst) => 's',
            Ok(Token::Usconst) => 'u',
            Ok(Token::Bconst) => 'b',
            Ok(Token::Xconst) => 'x',
            _ => continue,
        };
        let start = usize::try_from(t.start).ok()?;
        let end = usize::try_from(t.end).ok()?;
        if start < at || end <= start {
            return None;
        }
        key.push_str(sql.get(at..start)?);
        key.push('\0');
        key.push(marker);
        at = end;
    }
    if at == 0 {
        return None;
    }
    key.push_str(sql.get(at..)?);
    Some(key)
}

/// Whether every text of these facts' shape has these facts: no statement, wrapped or nested,
/// reads a constant's value. True only for `SELECT`, `INSERT`, `UPDATE`, `DELETE` and `MERGE`
/// that call no `set_config` (whose setting name decides `set_role`) and are not opaque, and
/// never for a parse failure. Everything else (`EXPLAIN` and `COPY` options, `DO` bodies,
/// utility statements) is classified per text.
pub fn shape_determines_facts(facts: &StatementFacts) -> bool {
    use StatementKind as K;
    !facts.is_parse_failure()
        && !facts.statements.is_empty()
        && facts.all().iter().all(|s| {
            matches!(
                s.kind,
                K::Select | K::Insert | K::Update | K::Delete | K::Merge
            ) && !s.calls("set_config")
                && !s.set_role
                && !s.opaque
                && !s.explain_analyze
                && s.copy.is_none()
                && s.inner.is_none()
        })
}

impl std::fmt::Debug for FactsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FactsCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .field("options", &self.options)
            .field("stats", &self.stats)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_returns_the_same_arc() {
        let mut cache = FactsCache::new(4);
        let first = cache.get_or_classify("SELECT 1");
        let second = cache.get_or_classify("SELECT 1");
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 1,
                shape_hits: 0,
                misses: 1
            }
        );
        assert_eq!(first.kind_names(), ["select"]);
    }

    #[test]
    fn new_constants_in_a_known_shape_hit_the_shape() {
        let mut cache = FactsCache::new(4);
        let first = cache.get_or_classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1");
        let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = 98765";
        let second = cache.get_or_classify(sql);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(*second, crate::classify(sql));
        assert_eq!(cache.stats().shape_hits, 1);
        assert_eq!(cache.stats().misses, 1);
        // A string where the shape had a number is another shape.
        cache.get_or_classify("SELECT abalance FROM pgbench_accounts WHERE aid = '5'");
        assert_eq!(cache.stats().misses, 2);
    }

    /// Statements whose facts read a constant's value: each text is classified on its own,
    /// so the second text's facts are its own, not those of the first.
    #[test]
    fn value_dependent_facts_are_never_shared_by_shape() {
        let pairs = [
            (
                "SELECT set_config('work_mem', '1MB', false)",
                "SELECT set_config('role', 'admin', false)",
            ),
            (
                "EXPLAIN (ANALYZE 'off') DELETE FROM t WHERE id = 1",
                "EXPLAIN (ANALYZE 'on') DELETE FROM t WHERE id = 1",
            ),
            (
                "COPY t TO STDOUT WITH (FORMAT 'text')",
                "COPY t TO STDOUT WITH (FORMAT 'csv')",
            ),
            (
                "DO $$BEGIN PERFORM 1; END$$",
                "DO $$BEGIN DELETE FROM accounts; END$$",
            ),
        ];
        for (first, second) in pairs {
            let mut cache = FactsCache::new(4);
            let a = cache.get_or_classify(first);
            let b = cache.get_or_classify(second);
            assert_eq!(shape_key(first), shape_key(second), "{first}");
            assert_ne!(a, b, "{first} / {second}: the pair must differ");
            assert_eq!(*b, crate::classify(second), "{second}");
            assert_eq!(cache.stats().shape_hits, 0, "{second}");
        }
    }

    #[test]
    fn shape_keys_keep_everything_but_constant_values() {
        let key = |s| shape_key(s).unwrap_or_default();
        assert_eq!(key("SELECT 1"), key("SELECT 22"));
        assert_ne!(key("SELECT 1"), key("SELECT '1'"));
        assert_ne!(key("SELECT 1"), key("SELECT 1.0"));
        assert_ne!(key("SELECT 1"), key("SELECT  1"));
        assert_ne!(key("SELECT 1 FROM a"), key("SELECT 1 FROM b"));
        assert_eq!(key("SELECT 'a''b'"), key("SELECT $q$x$q$"));
        assert_eq!(
            shape_key("SELECT $1"),
            None,
            "no constant: the exact cache serves it"
        );
        assert_eq!(
            shape_key("SELECT E'\\x'"),
            None,
            "a backslash lexes by session setting"
        );
        assert_eq!(shape_key("SELECT 'unterminated"), None);
    }

    #[test]
    fn backslash_texts_and_parse_failures_are_classified_per_text() {
        let mut cache = FactsCache::new(4);
        cache.get_or_classify("SELECT 'a\\' FROM t WHERE id = 1");
        cache.get_or_classify("SELECT 'b\\' FROM t WHERE id = 2");
        cache.get_or_classify("SELEC 1");
        let failed = cache.get_or_classify("SELEC 2");
        assert!(failed.is_parse_failure());
        assert_eq!(cache.stats().shape_hits, 0);
    }

    #[test]
    fn capacity_bounds_entries_and_evicts_least_recently_used() {
        let mut cache = FactsCache::new(2);
        let a = cache.get_or_classify("SELECT a FROM t1");
        let _b = cache.get_or_classify("SELECT a FROM t2");
        // Touch "SELECT a FROM t1" so "SELECT a FROM t2" is the least recently used.
        assert!(Arc::ptr_eq(&a, &cache.get_or_classify("SELECT a FROM t1")));
        let _c = cache.get_or_classify("SELECT a FROM t3");
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.capacity(), 2);
        assert!(Arc::ptr_eq(&a, &cache.get_or_classify("SELECT a FROM t1")));
        let misses = cache.stats().misses;
        let _b2 = cache.get_or_classify("SELECT a FROM t2");
        assert_eq!(cache.stats().misses, misses + 1, "t2 was evicted");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let mut cache = FactsCache::new(0);
        let first = cache.get_or_classify("SELECT 1");
        let second = cache.get_or_classify("SELECT 1");
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(first, second);
        assert!(cache.is_empty());
    }

    #[test]
    fn parse_failures_are_cached_too() {
        let mut cache = FactsCache::new(2);
        let first = cache.get_or_classify("SELEC 1");
        assert!(first.is_parse_failure());
        assert!(Arc::ptr_eq(&first, &cache.get_or_classify("SELEC 1")));
    }

    #[test]
    fn oversized_texts_are_not_stored() {
        let mut cache = FactsCache::new(2);
        let sql = format!("SELECT '{}'", "x".repeat(MAX_CACHED_SQL_LEN));
        let facts = cache.get_or_classify(&sql);
        assert_eq!(facts.kind_names(), ["select"]);
        assert!(cache.is_empty());
    }

    #[test]
    fn changing_options_clears_entries() {
        let mut cache = FactsCache::new(2);
        cache.get_or_classify("SELECT 1");
        cache.set_options(ClassifyOptions::default());
        assert_eq!(cache.len(), 1, "same options keep entries");
        cache.set_options(ClassifyOptions {
            standard_conforming_strings: false,
        });
        assert!(cache.is_empty());
    }
}
