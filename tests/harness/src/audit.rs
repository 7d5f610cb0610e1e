//! Audit events as printed by `countersign audit search --format jsonl` and returned by
//! `GET /api/v1/audit`, and the query used to fetch them.

use anyhow::{Context, Result};
use serde::{Deserialize, Deserializer};

/// One audit event. Fields the contract allows to be empty for session events are `Option`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct AuditEvent {
    /// `"<session_id>:<seq>"`
    pub id: String,
    #[serde(deserialize_with = "string_or_number")]
    pub session_id: String,
    pub seq: u64,
    /// `session_started`, `statement` or `session_ended`
    pub event: String,
    pub identity: String,
    pub resource: String,
    pub statement: Option<String>,
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    pub decision: Option<String>,
    /// The rule that decided, if any.
    #[serde(default)]
    pub rule: Option<String>,
    /// `simple` or `extended`
    pub protocol: Option<String>,
    pub parameter_count: Option<u64>,
    pub duration_us: Option<u64>,
    pub command_tag: Option<String>,
    pub rows: Option<u64>,
    pub error: Option<serde_json::Value>,
    /// Event-specific fields (for statements: `masking` counts).
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
    /// RFC 3339
    pub at: String,
}

impl AuditEvent {
    pub fn is_statement(&self) -> bool {
        self.event == "statement"
    }

    pub fn kinds(&self) -> &[String] {
        self.kinds.as_deref().unwrap_or_default()
    }

    /// The kinds sorted and deduplicated, for order-insensitive comparison.
    pub fn kind_set(&self) -> Vec<String> {
        let mut kinds = self.kinds().to_vec();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// The session id is not typed by the contract; accept a JSON string or number.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("session_id is {other}"))),
    }
}

/// Parses jsonl output: one event per non-empty line.
pub fn parse_jsonl(text: &str) -> Result<Vec<AuditEvent>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("audit line {l:?}")))
        .collect()
}

/// Filters for an audit search; `None` leaves a filter out.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub identity: Option<String>,
    pub resource: Option<String>,
    /// `statement`, `session_started`, ...: one kind of event.
    pub event: Option<String>,
    /// A duration such as `1h` for the CLI.
    pub since: Option<String>,
    pub limit: Option<u32>,
}

impl AuditQuery {
    pub fn identity(identity: &str) -> Self {
        AuditQuery {
            identity: Some(identity.to_owned()),
            ..Default::default()
        }
    }

    /// Only the statement events of `identity`.
    pub fn statements_of(identity: &str) -> Self {
        AuditQuery {
            event: Some("statement".to_owned()),
            ..AuditQuery::identity(identity)
        }
    }

    /// `audit search` arguments after `--server` and `--token`.
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let flags = [
            ("--identity", self.identity.clone()),
            ("--resource", self.resource.clone()),
            ("--event", self.event.clone()),
            ("--since", self.since.clone()),
            ("--limit", self.limit.map(|l| l.to_string())),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                args.push(flag.to_owned());
                args.push(value);
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events() {
        let text = r#"{"id":"s1:1","session_id":"s1","seq":1,"event":"session_started","identity":"a@x","resource":"dev","statement":null,"kinds":[],"decision":"allow","protocol":null,"parameter_count":null,"duration_us":null,"command_tag":null,"rows":null,"error":null,"at":"2025-01-01T00:00:00Z"}

{"id":"7:2","session_id":7,"seq":2,"event":"statement","identity":"a@x","resource":"dev","statement":"SELECT 1; INSERT INTO t VALUES (1)","kinds":["select","insert","select"],"decision":"allow","protocol":"simple","parameter_count":0,"duration_us":12,"command_tag":"INSERT 0 1","rows":1,"error":null,"at":"2025-01-01T00:00:01Z","extra":true}"#;
        let events = parse_jsonl(text).unwrap();
        assert_eq!(events.len(), 2);
        assert!(!events[0].is_statement());
        assert_eq!(events[1].session_id, "7");
        assert_eq!(events[1].kind_set(), ["insert", "select"]);
        assert!(parse_jsonl("{\"id\": 1}").is_err());
    }

    #[test]
    fn builds_cli_args() {
        let q = AuditQuery {
            limit: Some(5),
            ..AuditQuery::identity("a@x")
        };
        assert_eq!(q.cli_args(), ["--identity", "a@x", "--limit", "5"]);
        assert_eq!(
            AuditQuery::statements_of("a@x").cli_args(),
            ["--identity", "a@x", "--event", "statement"]
        );
    }
}
