//! Matches backend responses to the client messages that caused them, to
//! produce one audit event per statement.
//!
//! The client half registers each Query, Execute, FunctionCall and Sync
//! *before* forwarding it, so by the time a response arrives its cause is
//! already queued. Responses come back in order, so a FIFO is enough:
//! - simple Query: CommandComplete/Error/EmptyQuery accumulate until ReadyForQuery;
//! - Execute: completes at CommandComplete, EmptyQueryResponse, PortalSuspended
//!   or ErrorResponse. After an error, PostgreSQL skips everything up to Sync,
//!   so the Executes it skipped are dropped: they never ran;
//! - ReadyForQuery closes everything up to the Sync or Query it answers.
//! - A denied message was replaced by one that makes the server fail at once
//!   (see `relay`); its ErrorResponse is swapped for the denial's, so the
//!   client sees exactly what PostgreSQL does after any error: the
//!   transaction is aborted, and in the extended protocol the server skips to Sync.

use super::mask::MaskCtx;
use crate::audit::{Protocol, StatementEvent};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A statement as the session knows it: text and classification.
#[derive(Debug)]
pub struct StatementInfo {
    pub sql: Arc<str>,
    pub kinds: Arc<[&'static str]>,
    pub facts: Arc<countersign_policy::StatementFacts>,
    /// Facts under `standard_conforming_strings = off`, when they differ.
    pub alternative: Option<Arc<countersign_policy::StatementFacts>>,
}

impl StatementInfo {
    /// A pseudo-statement with fixed kinds (no SQL to classify).
    pub fn opaque(label: &str, kinds: &[&'static str]) -> Self {
        Self {
            sql: label.into(),
            kinds: kinds.to_vec().into(),
            facts: Arc::new(countersign_policy::StatementFacts {
                statements: Vec::new(),
                parse_error: None,
            }),
            alternative: None,
        }
    }
}

#[derive(Debug)]
pub enum Pending {
    Simple {
        /// The audit sequence reserved (and its intent spooled) when it was decided.
        seq: u64,
        stmt: Arc<StatementInfo>,
        rule: Option<Arc<str>>,
        /// "allow", or "review" for a statement released by approval.
        decision: &'static str,
        started: Instant,
        /// The statement's masking, when the session has mask rules.
        mask: Option<Arc<MaskCtx>>,
    },
    Execute {
        seq: u64,
        stmt: Arc<StatementInfo>,
        rule: Option<Arc<str>>,
        decision: &'static str,
        parameter_count: u32,
        started: Instant,
        mask: Option<Arc<MaskCtx>>,
    },
    /// A Describe, tracked only in sessions with mask rules: its RowDescription is rewritten
    /// for masked columns, and one the gateway sent itself (ahead of an Execute, to learn the
    /// portal's columns) is not passed on.
    Describe {
        mask: Option<Arc<MaskCtx>>,
        swallow: bool,
    },
    /// A message the gateway replaced because policy denied it; `error` is
    /// the ErrorResponse the client gets instead of the server's.
    Denied {
        error: Bytes,
        /// A simple Query (answered by its own ReadyForQuery) rather than an
        /// extended-protocol message (the server then skips to Sync).
        simple: bool,
    },
    Sync,
}

/// What one completed statement produced.
#[derive(Debug)]
pub struct Outcome {
    /// The sequence of the statement's intent.
    pub seq: u64,
    pub stmt: Arc<StatementInfo>,
    pub rule: Option<Arc<str>>,
    pub decision: &'static str,
    pub protocol: Protocol,
    pub parameter_count: u32,
    pub duration: Duration,
    pub command_tag: Option<String>,
    pub rows: Option<u64>,
    pub error: Option<String>,
    /// Values masked in the results (set by the upstream half).
    pub masking: Option<super::mask::MaskStats>,
}

impl Outcome {
    pub fn into_event(self, identity: &Arc<str>, resource: &Arc<str>) -> StatementEvent {
        StatementEvent {
            identity: identity.clone(),
            resource: resource.clone(),
            statement: self.stmt.sql.clone(),
            kinds: self.stmt.kinds.clone(),
            protocol: self.protocol,
            parameter_count: self.parameter_count,
            duration: self.duration,
            command_tag: self.command_tag,
            rows: self.rows,
            error: self.error,
            decision: self.decision,
            rule: self.rule.map(|r| r.to_string()),
            masking: self.masking,
        }
    }
}

/// Results of the simple Query at the front, gathered until ReadyForQuery.
#[derive(Debug, Default)]
struct SimpleResults {
    tags: Vec<String>,
    rows: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Tracker {
    pending: VecDeque<Pending>,
    simple: SimpleResults,
    /// An Execute failed; later Executes up to Sync were skipped by the server.
    skipping: bool,
    /// Sequences of Executes the server skipped: their intents are cancelled.
    skipped: Vec<u64>,
}

impl Tracker {
    pub fn push(&mut self, p: Pending) {
        self.pending.push_back(p);
    }

    /// Sequences of statements that never ran, since the last call.
    pub fn take_skipped(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.skipped)
    }

    /// A CommandComplete.
    pub fn command_complete(&mut self, tag: &str, rows: Option<u64>) -> Option<Outcome> {
        match self.front_statement()? {
            Pending::Simple { .. } => {
                self.simple.tags.push(tag.to_owned());
                if let Some(r) = rows {
                    self.simple.rows = Some(self.simple.rows.unwrap_or(0).saturating_add(r));
                }
                None
            }
            Pending::Execute { .. } => self.finish_execute(Some(tag.to_owned()), rows, None),
            Pending::Sync | Pending::Denied { .. } | Pending::Describe { .. } => None,
        }
    }

    /// EmptyQueryResponse or PortalSuspended.
    pub fn execute_done_without_tag(&mut self, tag: &str) -> Option<Outcome> {
        match self.front_statement()? {
            Pending::Execute { .. } => self.finish_execute(Some(tag.to_owned()), None, None),
            _ => None,
        }
    }

    /// An ErrorResponse (not FATAL: a FATAL ends the session). Returns the
    /// completed statement, if any, and the bytes to send the client instead
    /// of the server's error when the error answers a denied message.
    pub fn error(&mut self, text: String) -> (Option<Outcome>, Option<Bytes>) {
        if matches!(self.front_statement(), Some(Pending::Describe { .. })) {
            // A failed Describe (or the Bind before it): the server now skips to Sync, and
            // the Execute that follows, if any, carries the error in audit.
            while let Some(Pending::Describe { .. }) = self.pending.front() {
                self.pending.pop_front();
            }
            if !matches!(self.pending.front(), Some(Pending::Execute { .. })) {
                self.skipping = true;
                return (None, None);
            }
        }
        match self.front_statement() {
            Some(Pending::Simple { .. }) => {
                self.simple.error = Some(text);
                (None, None)
            }
            Some(Pending::Execute { .. }) => {
                let out = self.finish_execute(None, None, Some(text));
                self.skipping = true;
                (out, None)
            }
            Some(Pending::Denied {
                simple: true,
                error,
            }) => (None, Some(error.clone())),
            Some(Pending::Denied { simple: false, .. }) => match self.pending.pop_front() {
                Some(Pending::Denied { error, .. }) => {
                    self.skipping = true;
                    (None, Some(error))
                }
                _ => (None, None),
            },
            Some(Pending::Sync | Pending::Describe { .. }) | None => (None, None),
        }
    }

    /// A RowDescription or NoData arrived: the mask of what it describes, and whether the
    /// gateway asked for it itself (then it is not passed on). `None` when nothing tracked
    /// explains it (sessions without mask rules track no Describe).
    pub fn described(&mut self) -> Option<(Option<Arc<MaskCtx>>, bool)> {
        match self.front_statement()? {
            Pending::Simple { mask, .. } => Some((mask.clone(), false)),
            Pending::Describe { .. } => match self.pending.pop_front() {
                Some(Pending::Describe { mask, swallow }) => Some((mask, swallow)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The mask of the statement the next response belongs to.
    pub fn current_mask(&mut self) -> Option<Arc<MaskCtx>> {
        match self.front_statement()? {
            Pending::Simple { mask, .. }
            | Pending::Execute { mask, .. }
            | Pending::Describe { mask, .. } => mask.clone(),
            Pending::Sync | Pending::Denied { .. } => None,
        }
    }

    /// A ReadyForQuery: closes the simple Query or the Sync it answers.
    pub fn ready_for_query(&mut self) -> Option<Outcome> {
        self.skipping = false;
        while let Some(p) = self.pending.pop_front() {
            match p {
                Pending::Sync => return None,
                Pending::Denied { simple: true, .. } => {
                    self.simple = SimpleResults::default();
                    return None;
                }
                Pending::Simple {
                    seq,
                    stmt,
                    rule,
                    decision,
                    started,
                    ..
                } => {
                    let r = std::mem::take(&mut self.simple);
                    let command_tag = (!r.tags.is_empty()).then(|| r.tags.join("; "));
                    return Some(Outcome {
                        seq,
                        stmt,
                        rule,
                        decision,
                        protocol: Protocol::Simple,
                        parameter_count: 0,
                        duration: started.elapsed(),
                        command_tag,
                        rows: r.rows,
                        error: r.error,
                        masking: None,
                    });
                }
                // Skipped after an earlier error: never executed, or a denial
                // the server skipped (it was audited when it was decided).
                Pending::Execute { seq, .. } => self.skipped.push(seq),
                Pending::Denied { simple: false, .. } | Pending::Describe { .. } => {}
            }
        }
        None
    }

    /// Statements still waiting for a result when the session ends. Executes the
    /// server was skipping go to [`Self::take_skipped`].
    pub fn drain_unfinished(&mut self) -> Vec<Outcome> {
        let skipping = self.skipping;
        let mut out = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let (seq, stmt, rule, decision, protocol, parameter_count, started) = match p {
                Pending::Simple {
                    seq,
                    stmt,
                    rule,
                    decision,
                    started,
                    ..
                } => (seq, stmt, rule, decision, Protocol::Simple, 0, started),
                Pending::Execute { seq, .. } if skipping => {
                    self.skipped.push(seq);
                    continue;
                }
                Pending::Execute {
                    seq,
                    stmt,
                    rule,
                    decision,
                    parameter_count,
                    started,
                    ..
                } => (
                    seq,
                    stmt,
                    rule,
                    decision,
                    Protocol::Extended,
                    parameter_count,
                    started,
                ),
                _ => continue,
            };
            out.push(Outcome {
                seq,
                stmt,
                rule,
                decision,
                protocol,
                parameter_count,
                duration: started.elapsed(),
                command_tag: None,
                rows: None,
                error: Some(
                    "session ended before the statement completed; outcome unknown".to_owned(),
                ),
                masking: None,
            });
        }
        out
    }

    /// The first pending entry that a response can belong to.
    fn front_statement(&mut self) -> Option<&Pending> {
        if self.skipping {
            // Drop Executes (and denials) the server skipped, up to the Sync.
            while let Some(
                Pending::Execute { .. }
                | Pending::Denied { simple: false, .. }
                | Pending::Describe { .. },
            ) = self.pending.front()
            {
                if let Some(Pending::Execute { seq, .. }) = self.pending.pop_front() {
                    self.skipped.push(seq);
                }
            }
        }
        self.pending.front()
    }

    fn finish_execute(
        &mut self,
        command_tag: Option<String>,
        rows: Option<u64>,
        error: Option<String>,
    ) -> Option<Outcome> {
        match self.pending.pop_front()? {
            Pending::Execute {
                seq,
                stmt,
                rule,
                decision,
                parameter_count,
                started,
                ..
            } => Some(Outcome {
                seq,
                stmt,
                rule,
                decision,
                protocol: Protocol::Extended,
                parameter_count,
                duration: started.elapsed(),
                command_tag,
                rows,
                error,
                masking: None,
            }),
            other => {
                self.pending.push_front(other);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmt(sql: &str) -> Arc<StatementInfo> {
        Arc::new(StatementInfo::opaque(sql, &["select"]))
    }

    fn exec(sql: &str) -> Pending {
        Pending::Execute {
            seq: sql.len() as u64,
            stmt: stmt(sql),
            rule: None,
            decision: "allow",
            parameter_count: 1,
            started: Instant::now(),
            mask: None,
        }
    }

    #[test]
    fn simple_query_with_several_statements_is_one_outcome() {
        let mut t = Tracker::default();
        t.push(Pending::Simple {
            seq: 1,
            stmt: stmt("insert …; select …"),
            rule: None,
            decision: "allow",
            started: Instant::now(),
            mask: None,
        });
        assert!(t.command_complete("INSERT 0 2", Some(2)).is_none());
        assert!(t.command_complete("SELECT 3", Some(3)).is_none());
        let o = t.ready_for_query().unwrap();
        assert_eq!(o.command_tag.as_deref(), Some("INSERT 0 2; SELECT 3"));
        assert_eq!(o.rows, Some(5));
        assert!(t.pending.is_empty());
    }

    #[test]
    fn pipelined_executes_complete_in_order_and_skip_after_error() {
        let mut t = Tracker::default();
        t.push(exec("a"));
        t.push(exec("b"));
        t.push(exec("c"));
        t.push(Pending::Sync);
        t.push(exec("d"));
        t.push(Pending::Sync);
        assert_eq!(
            &*t.command_complete("SELECT 1", Some(1)).unwrap().stmt.sql,
            "a"
        );
        let b = t.error("42P01: no such table".into()).0.unwrap();
        assert_eq!(&*b.stmt.sql, "b");
        assert!(b.error.is_some());
        // "c" was skipped by the server: nothing is reported for it, and its intent is cancelled.
        assert!(t.ready_for_query().is_none());
        assert_eq!(t.take_skipped(), vec![1]);
        assert_eq!(
            &*t.command_complete("SELECT 1", Some(1)).unwrap().stmt.sql,
            "d"
        );
        assert!(t.ready_for_query().is_none());
        assert!(t.pending.is_empty());
    }

    #[test]
    fn denied_messages_swap_the_server_error() {
        let mut t = Tracker::default();
        let denial = Bytes::from_static(b"denial");
        // Simple: the swapped error, then its own ReadyForQuery; the next Query is untouched.
        t.push(Pending::Denied {
            error: denial.clone(),
            simple: true,
        });
        t.push(Pending::Simple {
            seq: 1,
            stmt: stmt("select 1"),
            rule: None,
            decision: "allow",
            started: Instant::now(),
            mask: None,
        });
        assert_eq!(t.error("42601: syntax error".into()).1.unwrap(), denial);
        assert!(t.ready_for_query().is_none());
        assert!(t.command_complete("SELECT 1", Some(1)).is_none());
        assert_eq!(&*t.ready_for_query().unwrap().stmt.sql, "select 1");

        // Extended: a denied Parse; the server skips the Execute after it.
        t.push(Pending::Denied {
            error: denial.clone(),
            simple: false,
        });
        t.push(exec("skipped"));
        t.push(Pending::Sync);
        assert_eq!(t.error("42601: syntax error".into()).1.unwrap(), denial);
        assert!(t.ready_for_query().is_none());
        assert!(t.pending.is_empty());
        assert!(t.drain_unfinished().is_empty());
    }

    #[test]
    fn unfinished_statements_are_reported_at_session_end() {
        let mut t = Tracker::default();
        t.push(exec("a"));
        let left = t.drain_unfinished();
        assert_eq!(left.len(), 1);
        assert!(
            left[0]
                .error
                .as_deref()
                .unwrap()
                .contains("outcome unknown")
        );
    }
}
