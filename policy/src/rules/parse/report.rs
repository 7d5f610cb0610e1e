//! Error collection with positions, and typed reads of spanned TOML values.
//!
//! Every read reports its own type error and returns `None`, so callers just skip what is
//! broken and keep checking the rest of the file.

use std::ops::Range;

use super::super::glob::Glob;
use super::Value;
use crate::rules::{PolicyError, PolicyErrors};
use toml::de::DeValue;

/// The errors found so far in one file.
pub(super) struct Report<'t> {
    text: &'t str,
    errors: Vec<PolicyError>,
}

impl<'t> Report<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Self {
            text,
            errors: Vec::new(),
        }
    }

    pub(super) fn at(
        &mut self,
        span: Range<usize>,
        rule: Option<&str>,
        message: impl Into<String>,
    ) {
        let (line, column) = position(self.text, span.start);
        self.errors.push(PolicyError {
            line: Some(line),
            column: Some(column),
            rule: rule.map(str::to_owned),
            message: message.into(),
        });
    }

    /// A file that is not TOML: one error, where the parser gave up.
    pub(super) fn toml_syntax(&mut self, err: &toml::de::Error) {
        let message = format!("invalid TOML: {}", err.message().trim());
        match err.span() {
            Some(span) => self.at(span, None, message),
            None => self.errors.push(PolicyError {
                line: None,
                column: None,
                rule: None,
                message,
            }),
        }
    }

    pub(super) fn is_clean(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors in file order. (The TOML tree hands keys over sorted by name, not in file
    /// order, so they are found out of order.)
    pub(super) fn finish(mut self) -> PolicyErrors {
        self.errors.sort_by_key(|e| (e.line, e.column));
        PolicyErrors {
            errors: self.errors,
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// `unknown field "x" in match (valid: a, b)`; `table` empty for the rule or top level.
pub(super) fn unknown_field(name: &str, table: &str, valid: &[&str]) -> String {
    let place = if table.is_empty() {
        String::new()
    } else {
        format!(" in `{table}`")
    };
    format!(
        "unknown field {name:?}{place} (valid: {})",
        valid.join(", ")
    )
}

/// The report plus the rule being checked, so every error is labelled with it.
pub(super) struct RuleCx<'a, 't> {
    report: &'a mut Report<'t>,
    rule: Option<&'a str>,
    errors_before: usize,
}

impl<'a, 't> RuleCx<'a, 't> {
    pub(super) fn new(report: &'a mut Report<'t>, rule: Option<&'a str>) -> Self {
        let errors_before = report.errors.len();
        Self {
            report,
            rule,
            errors_before,
        }
    }

    /// For top-level fields, which belong to no rule.
    pub(super) fn top(report: &'a mut Report<'t>) -> Self {
        Self::new(report, None)
    }

    pub(super) fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.report.at(span, self.rule, message);
    }

    /// No error reported through this context (so far).
    pub(super) fn is_clean(&self) -> bool {
        self.report.errors.len() == self.errors_before
    }

    /// The number of errors reported so far, to tell whether a part of the rule added any.
    pub(super) fn error_count(&self) -> usize {
        self.report.errors.len()
    }

    pub(super) fn line_of(&self, span: Range<usize>) -> usize {
        position(self.report.text, span.start).0
    }

    pub(super) fn string<'v>(&mut self, field: &str, value: &'v Value<'_>) -> Option<&'v str> {
        let text = value.get_ref().as_str();
        if text.is_none() {
            self.type_error(field, value, "a string");
        }
        text
    }

    pub(super) fn integer(&mut self, field: &str, value: &Value<'_>) -> Option<i64> {
        match value.get_ref() {
            DeValue::Integer(n) => {
                let parsed = i64::from_str_radix(n.as_str(), n.radix()).ok();
                if parsed.is_none() {
                    self.error(value.span(), format!("`{field}` is out of range"));
                }
                parsed
            }
            _ => {
                self.type_error(field, value, "an integer");
                None
            }
        }
    }

    /// A `true` flag. `false` is an error: leaving the field out is the only way to say "no
    /// condition", so a rule cannot look restrictive while matching everything.
    pub(super) fn flag(&mut self, field: &str, value: &Value<'_>) -> bool {
        match value.get_ref() {
            DeValue::Boolean(true) => true,
            DeValue::Boolean(false) => {
                self.error(
                    value.span(),
                    format!("`{field} = false` is not a condition; omit the field instead"),
                );
                false
            }
            _ => {
                self.type_error(field, value, "`true`");
                false
            }
        }
    }

    /// A non-empty array of strings, each with its span. `None` if the array or any element
    /// is wrong (each wrong element is reported).
    pub(super) fn strings<'v>(
        &mut self,
        field: &str,
        value: &'v Value<'_>,
    ) -> Option<Vec<(&'v str, Range<usize>)>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(field, value, "an array of strings");
            return None;
        };
        if items.is_empty() {
            self.error(
                value.span(),
                format!("`{field}` is empty; omit the field or list at least one entry"),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(text) if text.trim().is_empty() => {
                    self.error(item.span(), format!("empty entry in `{field}`"));
                    ok = false;
                }
                Some(text) => out.push((text, item.span())),
                None => {
                    self.type_error(field, item, "an array of strings");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// An optional list of plain globs (`resources`, `environments`); empty when absent.
    pub(super) fn globs(&mut self, field: &str, value: Option<&Value<'_>>) -> Vec<Glob> {
        let Some(entries) = value.and_then(|v| self.strings(field, v)) else {
            return Vec::new();
        };
        let mut globs = Vec::with_capacity(entries.len());
        for (pattern, span) in entries {
            match Glob::new(pattern) {
                Ok(glob) => globs.push(glob),
                Err(why) => {
                    self.error(span, format!("bad pattern {pattern:?} in `{field}`: {why}"))
                }
            }
        }
        globs
    }

    fn type_error(&mut self, field: &str, value: &Value<'_>, expected: &str) {
        let found = match value.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.error(
            value.span(),
            format!("`{field}` must be {expected}, not {found}"),
        );
    }
}
