//! A bounded LRU of statement facts, keyed by the exact statement text.
//!
//! Classifying costs tens of microseconds; applications send the same texts over and over
//! (prepared statements, ORMs, pgbench), so the gateway keeps one of these per session or
//! behind a lock. Keying prepared statements by name is the caller's business.
//!
//! Not guaranteed: memory is bounded by entry count, not bytes. Texts longer than
//! [`MAX_CACHED_SQL_LEN`] are classified every time and never stored, so one entry's key is at
//! most that size. The key is the byte-exact text: `select 1` and `SELECT 1` are two entries.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use crate::facts::{ClassifyOptions, StatementFacts, classify_with};

/// Statement texts longer than this (in bytes) are not cached.
pub const MAX_CACHED_SQL_LEN: usize = 64 * 1024;

/// Hit and miss counters, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// A bounded LRU from statement text to its facts.
pub struct FactsCache {
    /// `None` when created with capacity 0: nothing is cached.
    entries: Option<LruCache<String, Arc<StatementFacts>>>,
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
            entries: NonZeroUsize::new(capacity).map(LruCache::new),
            options,
            stats: CacheStats::default(),
        }
    }

    /// Changes the session options; the entries were parsed under the old ones, so a change
    /// empties the cache.
    pub fn set_options(&mut self, options: ClassifyOptions) {
        if options != self.options {
            self.options = options;
            if let Some(entries) = &mut self.entries {
                entries.clear();
            }
        }
    }

    pub fn options(&self) -> ClassifyOptions {
        self.options
    }

    /// The facts for `sql`, from the cache or freshly classified (and then cached).
    pub fn get_or_classify(&mut self, sql: &str) -> Arc<StatementFacts> {
        if let Some(facts) = self.entries.as_mut().and_then(|e| e.get(sql)) {
            self.stats.hits += 1;
            return Arc::clone(facts);
        }
        self.stats.misses += 1;
        let facts = Arc::new(classify_with(sql, self.options));
        if let Some(entries) = &mut self.entries
            && sql.len() <= MAX_CACHED_SQL_LEN
        {
            entries.put(sql.to_owned(), Arc::clone(&facts));
        }
        facts
    }

    pub fn len(&self) -> usize {
        self.entries.as_ref().map_or(0, LruCache::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.entries.as_ref().map_or(0, |e| e.cap().get())
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }
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
        assert_eq!(cache.stats(), CacheStats { hits: 1, misses: 1 });
        assert_eq!(first.kind_names(), ["select"]);
    }

    #[test]
    fn capacity_bounds_entries_and_evicts_least_recently_used() {
        let mut cache = FactsCache::new(2);
        let a = cache.get_or_classify("SELECT 1");
        let _b = cache.get_or_classify("SELECT 2");
        // Touch "SELECT 1" so "SELECT 2" is the least recently used.
        assert!(Arc::ptr_eq(&a, &cache.get_or_classify("SELECT 1")));
        let _c = cache.get_or_classify("SELECT 3");
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.capacity(), 2);
        assert!(Arc::ptr_eq(&a, &cache.get_or_classify("SELECT 1")));
        let misses = cache.stats().misses;
        let _b2 = cache.get_or_classify("SELECT 2");
        assert_eq!(cache.stats().misses, misses + 1, "SELECT 2 was evicted");
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
