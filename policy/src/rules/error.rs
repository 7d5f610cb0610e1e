//! What is wrong with a policy file: every problem, each with its place.
//!
//! [`PolicyErrors`] is all-or-nothing: a file with any error yields no [`super::Policy`], so a
//! half-understood policy is never enforced. Messages quote the offending value from the file
//! (never statement text or secrets), so they are safe to show to the policy author.

use std::fmt;

/// One problem in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// 1-based line of the offending key or value (for rule-level problems, of the rule's
    /// `name` or its `[[guardrail]]` header).
    pub line: Option<usize>,
    /// 1-based column, in characters, on `line`.
    pub column: Option<usize>,
    /// The rule's `name`, when the rule has one that is a string.
    pub rule: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    /// `line 7: rule "x": unknown statement kind "drp" (valid: ...)`, leaving out the parts
    /// that are unknown. The column stays in the struct: editors want it, people rarely do.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in a policy file, in file order. Never empty when returned as an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyErrors {
    pub errors: Vec<PolicyError>,
}

impl fmt::Display for PolicyErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}
