//! Glob patterns for resource, environment, table and function names.
//!
//! Only `*` (any run of characters, possibly empty) and `?` (exactly one character) are special;
//! matching ignores ASCII case and allocates nothing. Character classes, alternatives and
//! escapes are rejected at parse time rather than taken literally, so `pg_[a-z]*` cannot
//! silently match nothing. [`NamePattern`] adds the `schema.name` convention and the
//! default-`search_path` reading of unqualified names used by `tables` and `functions`.

/// The schemas an unqualified table or function name is taken to live in: PostgreSQL always
/// searches `pg_catalog` first, and the default `search_path` is `"$user", public` (a schema
/// named after the user is not considered).
pub(crate) const DEFAULT_SCHEMAS: [&str; 2] = ["pg_catalog", "public"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    /// `*`
    Any,
    /// `?`
    One,
    Char(char),
}

/// A compiled glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern`, or says why it is not a usable pattern.
    pub fn new(pattern: &str) -> Result<Self, &'static str> {
        if pattern.is_empty() {
            return Err("empty pattern");
        }
        if pattern.trim() != pattern {
            return Err("leading or trailing whitespace");
        }
        if pattern.contains(['[', ']', '{', '}', '\\']) {
            return Err(
                "only `*` and `?` are special; list several patterns instead of using \
                 `[...]`, `{...}` or `\\`",
            );
        }
        let mut tokens = Vec::with_capacity(pattern.len());
        for c in pattern.chars() {
            let token = match c {
                '*' if tokens.last() == Some(&Token::Any) => continue,
                '*' => Token::Any,
                '?' => Token::One,
                c => Token::Char(c),
            };
            tokens.push(token);
        }
        Ok(Self { tokens })
    }

    /// Whether the whole of `text` matches, ignoring ASCII case.
    pub fn matches(&self, text: &str) -> bool {
        // Iterative matching with a single backtrack point (the last `*`): linear in practice,
        // O(pattern × text) at worst, and no recursion.
        let (mut p, mut t) = (0, 0);
        let mut backtrack: Option<(usize, usize)> = None;
        loop {
            let next = text.get(t..).and_then(|rest| rest.chars().next());
            match (self.tokens.get(p), next) {
                (Some(Token::Any), _) => {
                    backtrack = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                (Some(Token::One), Some(c)) => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                (Some(Token::Char(want)), Some(c)) if want.eq_ignore_ascii_case(&c) => {
                    p += 1;
                    t += c.len_utf8();
                    continue;
                }
                (None, None) => return true,
                _ => {}
            }
            // Mismatch: let the last `*` swallow one more character, if there is one.
            let Some((star_p, star_t)) = backtrack else {
                return false;
            };
            let Some(c) = text.get(star_t..).and_then(|rest| rest.chars().next()) else {
                return false;
            };
            backtrack = Some((star_p, star_t + c.len_utf8()));
            p = star_p;
            t = star_t + c.len_utf8();
        }
    }
}

/// A `tables` or `functions` pattern: `name` (any schema) or `schema.name`, each part a glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NamePattern {
    schema: Option<Glob>,
    name: Glob,
}

impl NamePattern {
    pub(crate) fn new(pattern: &str) -> Result<Self, &'static str> {
        match pattern.split_once('.') {
            None => Ok(Self {
                schema: None,
                name: Glob::new(pattern)?,
            }),
            Some((_, name)) if name.contains('.') => {
                Err("at most one dot: write `name` or `schema.name`")
            }
            Some((schema, name)) if schema.is_empty() || name.is_empty() => {
                Err("empty schema or name around the dot")
            }
            Some((schema, name)) => Ok(Self {
                schema: Some(Glob::new(schema)?),
                name: Glob::new(name)?,
            }),
        }
    }

    /// Whether a reference to `schema.name` (`schema` `None` when the SQL left it out)
    /// matches. An unqualified reference matches a qualified pattern when the pattern's schema
    /// matches one of [`DEFAULT_SCHEMAS`].
    pub(crate) fn matches(&self, schema: Option<&str>, name: &str) -> bool {
        if !self.name.matches(name) {
            return false;
        }
        match (&self.schema, schema) {
            (None, _) => true,
            (Some(want), Some(schema)) => want.matches(schema),
            (Some(want), None) => DEFAULT_SCHEMAS.iter().any(|s| want.matches(s)),
        }
    }

    /// Matches a function as `StatementFacts` spells it: lower-case, `name` or
    /// `[catalog.]schema.name`.
    pub(crate) fn matches_function(&self, function: &str) -> bool {
        match function.rsplit_once('.') {
            None => self.matches(None, function),
            Some((qualifier, name)) => {
                let schema = qualifier.rsplit('.').next().unwrap_or(qualifier);
                self.matches(Some(schema), name)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::new(p).unwrap()
    }

    #[test]
    fn glob_matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("pg-prod*", "pg-prod", true),
            ("pg-prod*", "pg-prod-eu", true),
            ("pg-prod*", "pg-staging", false),
            ("*prod*", "eu-prod-1", true),
            ("lo_*", "lo_import", true),
            ("lo_*", "log", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "aéc", true),
            ("*", "", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("**x", "x", true),
            ("Users", "users", true),
            ("users", "USERS", true),
            ("exact", "exactly", false),
        ];
        for &(p, text, want) in cases {
            assert_eq!(glob(p).matches(text), want, "{p:?} vs {text:?}");
        }
    }

    #[test]
    fn bad_globs() {
        for p in ["", " x", "x ", "pg_[a-z]", "{a,b}", "a\\*"] {
            assert!(Glob::new(p).is_err(), "{p:?}");
        }
        for p in ["a.b.c", ".x", "x.", "."] {
            assert!(NamePattern::new(p).is_err(), "{p:?}");
        }
    }

    #[test]
    fn name_patterns() {
        let p = |s: &str| NamePattern::new(s).unwrap();
        assert!(p("users").matches(Some("app"), "users"));
        assert!(p("users").matches(None, "users"));
        assert!(p("public.users").matches(None, "users"));
        assert!(!p("app.users").matches(None, "users"));
        assert!(p("pg_catalog.pg_authid").matches(None, "pg_authid"));
        assert!(p("*.secrets").matches(Some("hr"), "secrets"));
        assert!(p("pg_read_file").matches_function("pg_catalog.pg_read_file"));
        assert!(p("pg_catalog.pg_read_file").matches_function("pg_read_file"));
        assert!(p("pg_catalog.pg_read_file").matches_function("db.pg_catalog.pg_read_file"));
        assert!(!p("ext.f").matches_function("f"));
        assert!(!p("pg_catalog.pg_read_file").matches_function("evil.pg_read_file"));
    }
}
