//! The client half's view of each message: classify, decide, track.
//!
//! Every Query, Parse and Execute is classified (facts cached per session by
//! text) and decided by the session's current policy, read from the config
//! watch at that moment, so a new policy applies to the very next statement.
//!
//! A denied message is never forwarded. It is replaced by one that makes the
//! server fail immediately without touching data (a Query or Parse of text
//! that cannot parse, or an Execute of a portal that does not exist), and the
//! server's error is swapped for the denial on the way back (`track`). The
//! client therefore sees exactly PostgreSQL's error semantics: the statement
//! fails, an open transaction is aborted, and in the extended protocol the
//! server skips to the next Sync.
//!
//! Decided at: Query; Parse; Execute of a named statement (the policy may have
//! changed since its Parse). SQL-level `PREPARE name AS …` is remembered like
//! a protocol-level Parse, so a later `EXECUTE name` (SQL) or a Bind to that
//! name is decided on the prepared statement's facts under the policy of the
//! moment, not only when it was prepared. A fast-path FunctionCall is denied whenever the
//! policy has any rule, since it can call any function by OID.
//! A `review` decision holds the message (a Query, or an Execute: preparing
//! runs nothing) until people other than the requester decide it; see `review`.

use super::mask::{self, MaskCtx};
use super::relay::{RelayEnd, Shared};
use super::track::{Pending, StatementInfo};
use super::wire::Frame;
use super::wire::backend::{self, ErrorNotice, Severity};
use super::wire::frontend::{self, FrontendMessage};
use crate::audit::{AuditBody, AuditEvent, Protocol, StatementEvent};
use bytes::{Bytes, BytesMut};
use countersign_policy::{
    Action, ClassifyOptions, Decision, FactsCache, SessionContext, StatementFacts, StatementKind,
    decide,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Statements whose facts a session keeps, by text.
const FACTS_CACHE: usize = 256;
/// Text the server cannot parse: what a denied Query or Parse becomes.
const UNPARSABLE: &str = "COUNTERSIGN DENIED";
/// A portal no client can have bound: what a denied Execute becomes.
const NO_PORTAL: &str = "\u{1}countersign-denied";

/// Names run by SQL-level `EXECUTE name`, also when wrapped (`CREATE TABLE t AS EXECUTE p`,
/// `EXPLAIN ANALYZE EXECUTE p`).
fn executed_names(facts: &StatementFacts) -> impl Iterator<Item = &str> {
    facts
        .statements
        .iter()
        .flat_map(|s| std::iter::once(s).chain(s.inner.as_deref()))
        .filter(|s| s.kind == StatementKind::Execute)
        .filter_map(|s| s.prepared_name.as_deref())
}

fn severity(a: Action) -> u8 {
    match a {
        Action::Allow => 0,
        Action::Review => 1,
        Action::Deny => 2,
    }
}

/// What to send upstream for a client message.
pub enum Verdict {
    /// The message as received.
    Forward,
    /// These bytes instead (a denial's stand-in, or a released held message).
    Replace(Bytes),
    /// Hold the message until a review decides it (see `review`).
    Review(Held),
}

/// A message held for review: a simple Query, or an Execute.
pub struct Held {
    pub stmt: Arc<StatementInfo>,
    /// The review decision: rule, message, approvals and approvers.
    pub decision: Decision,
    pub protocol: Protocol,
    /// The message as the client sent it, forwarded on approval.
    pub frame: Bytes,
    pub parameter_count: u32,
    /// The portal of a held Execute.
    pub portal: Option<String>,
}

struct Portal {
    stmt: Arc<StatementInfo>,
    parameter_count: u32,
    /// Bound from a named prepared statement: decided again at Execute.
    named: bool,
    /// The review its unnamed statement's Parse asked for.
    review: Option<Decision>,
}

/// What a denied Query (or fast-path call) becomes.
fn query_stand_in() -> BytesMut {
    let mut out = BytesMut::new();
    frontend::encode_query(UNPARSABLE, &mut out);
    out
}

/// What a denied Execute becomes.
fn execute_stand_in() -> BytesMut {
    let mut out = BytesMut::new();
    frontend::encode_execute(NO_PORTAL, 0, &mut out);
    out
}

pub struct Inspector {
    cache: FactsCache,
    /// The same, lexing with `standard_conforming_strings = off`.
    cache_backslash: FactsCache,
    statements: HashMap<String, Arc<StatementInfo>>,
    portals: HashMap<String, Portal>,
    /// Prepared statements whose Parse asked for review, by name.
    needs_review: HashMap<String, Decision>,
    decision_event: Option<AuditEvent>,
    /// The number of the last intent spooled, until the caller forwards.
    spooled: Option<u64>,
    /// The portal the previous client message described (`Describe` of a portal, in a
    /// session under masking), and the masking its answer sets up. An `Execute` of that
    /// portal right after it reuses that answer instead of asking for another.
    described: Option<(String, Arc<MaskCtx>)>,
}

impl Inspector {
    pub fn new(_shared: &Shared) -> Self {
        Self {
            cache: FactsCache::new(FACTS_CACHE),
            cache_backslash: FactsCache::with_options(
                FACTS_CACHE,
                ClassifyOptions {
                    standard_conforming_strings: false,
                },
            ),
            statements: HashMap::new(),
            portals: HashMap::new(),
            needs_review: HashMap::new(),
            decision_event: None,
            spooled: None,
            described: None,
        }
    }

    /// The spool record number of the last intent written since the last call:
    /// what a `strict_audit` session waits to see fsynced before forwarding.
    pub fn take_spooled(&mut self) -> Option<u64> {
        self.spooled.take()
    }

    /// Reserves the statement's audit sequence and spools its intent, before the
    /// statement is forwarded. When the spool cannot take it (full, or failing),
    /// the statement is refused: `Err` holds the bytes to send upstream instead.
    #[allow(clippy::too_many_arguments)]
    fn intend(
        &mut self,
        shared: &Shared,
        stmt: &StatementInfo,
        protocol: Protocol,
        parameter_count: u32,
        decision: &'static str,
        rule: Option<&str>,
        stand_in: fn() -> BytesMut,
    ) -> Result<u64, Bytes> {
        let event = shared.next_event(AuditBody::Statement(StatementEvent {
            identity: shared.identity.clone(),
            resource: shared.resource.clone(),
            statement: stmt.sql.clone(),
            kinds: stmt.kinds.clone(),
            protocol,
            parameter_count,
            duration: Duration::ZERO,
            command_tag: None,
            rows: None,
            error: None,
            decision,
            rule: rule.map(str::to_owned),
            masking: None,
        }));
        let seq = event.seq;
        match shared.audit.intend(event) {
            Ok(record) => {
                self.spooled = Some(record);
                Ok(seq)
            }
            Err(e) => Err(self.refuse_unaudited(shared, &e, protocol, stand_in())),
        }
    }

    /// A statement that cannot be audited does not run. It is not audited either
    /// (it cannot be): the log says so.
    fn refuse_unaudited(
        &mut self,
        shared: &Shared,
        e: &crate::audit::SpoolError,
        protocol: Protocol,
        stand_in: BytesMut,
    ) -> Bytes {
        tracing::warn!(session = %shared.session_id, error = %e, "statement refused: the audit spool cannot take it");
        let message =
            format!("countersign: {e}; the statement was refused because it cannot be audited");
        let mut error = BytesMut::new();
        backend::encode_error(
            &ErrorNotice {
                severity: Severity::Error,
                code: "53100",
                message: &message,
                detail: None,
                hint: Some(
                    "the statement did not reach the database; retry once the gateway's audit spool has room",
                ),
            },
            &mut error,
        );
        shared.track(Pending::Denied {
            error: error.freeze(),
            simple: protocol == Protocol::Simple,
        });
        stand_in.freeze()
    }

    /// The audit event of the last denial, to be recorded by the caller.
    pub fn take_decision_event(&mut self) -> Option<AuditEvent> {
        self.decision_event.take()
    }

    /// Classifies `sql`. A backslash can end a string literal or not depending
    /// on `standard_conforming_strings`, which a client can change at any time
    /// (even in the same pipeline), so text with a backslash is classified both
    /// ways and decided by the stricter reading.
    fn classify(&mut self, sql: &str) -> Arc<StatementInfo> {
        let facts = self.cache.get_or_classify(sql);
        let alternative = sql
            .contains('\\')
            .then(|| self.cache_backslash.get_or_classify(sql))
            // A reading that does not parse cannot run either: the server would
            // reject the text with a syntax error in that mode.
            .filter(|alt| alt != &facts && !alt.is_parse_failure());
        let mut kinds = facts.kind_names();
        if facts.is_parse_failure() {
            kinds.push("parse_error");
        }
        if let Some(alt) = &alternative {
            for k in alt.kind_names() {
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
        }
        Arc::new(StatementInfo {
            sql: sql.into(),
            kinds: kinds.into(),
            facts,
            alternative,
        })
    }

    fn decide(&self, shared: &Shared, stmt: &StatementInfo) -> Decision {
        // Decide under the config borrow: no per-statement clones. `decide`
        // is pure and short, so the watch's writer is held up only briefly.
        let config = shared.config.borrow();
        let empty;
        let (policy, environment) = match config.as_ref() {
            Some(c) => (
                &*c.policy,
                c.resources
                    .get(&*shared.resource)
                    .map_or("", |r| r.environment.as_str()),
            ),
            None => {
                empty = countersign_policy::Policy::empty();
                (&empty, "")
            }
        };
        let ctx = SessionContext {
            identity: &shared.identity,
            groups: &shared.groups,
            resource: &shared.resource,
            environment,
            access_level: shared.access_level.as_deref(),
        };
        let mut d = decide(policy, &ctx, &stmt.facts, &stmt.sql);
        let mut consider = |other: Decision| {
            if severity(other.action) > severity(d.action) {
                d = other;
            }
        };
        if let Some(alt) = &stmt.alternative {
            consider(decide(policy, &ctx, alt, &stmt.sql));
        }
        // `EXECUTE name` runs what `PREPARE name` held: decide on that too.
        for name in executed_names(&stmt.facts) {
            if let Some(prepared) = self.statements.get(name) {
                consider(decide(policy, &ctx, &prepared.facts, &prepared.sql));
            }
        }
        d
    }

    /// After an allowed Query or Parse: remember what SQL-level PREPARE
    /// defines and forget what DEALLOCATE drops.
    fn note_prepared(&mut self, stmt: &StatementInfo) {
        for s in &stmt.facts.statements {
            match (s.kind, &s.prepared_name, &s.inner) {
                (StatementKind::Prepare, Some(name), Some(inner)) => {
                    let facts = StatementFacts {
                        statements: vec![(**inner).clone()],
                        parse_error: None,
                    };
                    let kinds: Vec<&'static str> = facts.kind_names();
                    self.statements.insert(
                        name.clone(),
                        Arc::new(StatementInfo {
                            sql: stmt.sql.clone(),
                            kinds: kinds.into(),
                            facts: Arc::new(facts),
                            alternative: None,
                        }),
                    );
                }
                (StatementKind::Deallocate, Some(name), _) => {
                    self.statements.remove(name);
                }
                // DEALLOCATE ALL drops every prepared statement, protocol-level ones too.
                (StatementKind::Deallocate, None, _) => self.statements.clear(),
                _ => {}
            }
        }
    }

    /// The masking of `stmt` (with the prepared statements it `EXECUTE`s), when the session
    /// has mask rules.
    fn mask_ctx(&self, shared: &Shared, stmt: &StatementInfo) -> Option<Arc<MaskCtx>> {
        if !shared.mask_active.load(Ordering::Acquire) {
            return None;
        }
        let mut stmts: Vec<&StatementInfo> = vec![stmt];
        for name in executed_names(&stmt.facts) {
            if let Some(prepared) = self.statements.get(name) {
                stmts.push(prepared);
            }
        }
        mask::statement_ctx(shared, &stmts)
    }

    /// Looks at one client message; says what to forward for it.
    pub fn inspect(&mut self, shared: &Shared, frame: &Frame) -> Result<Verdict, RelayEnd> {
        // Only the message right after a Describe may reuse its answer: any other message
        // in between (a Flush, a new Bind of the portal, ...) ends that.
        let described = self.described.take();
        if !matches!(
            frame.tag,
            b'Q' | b'P' | b'B' | b'E' | b'C' | b'S' | b'F' | b'D'
        ) {
            return Ok(Verdict::Forward);
        }
        let msg = FrontendMessage::parse(frame)
            .map_err(|_| RelayEnd::ClientProtocol(char::from(frame.tag)))?;
        let now = Instant::now();
        match msg {
            FrontendMessage::Query { sql } => {
                let stmt = self.classify(sql);
                let d = self.decide(shared, &stmt);
                match d.action {
                    Action::Deny => {
                        return Ok(self.deny(
                            shared,
                            &stmt,
                            &d,
                            Protocol::Simple,
                            query_stand_in(),
                        ));
                    }
                    Action::Review => {
                        return Ok(Verdict::Review(Held {
                            stmt,
                            decision: d,
                            protocol: Protocol::Simple,
                            frame: frame.bytes.clone(),
                            parameter_count: 0,
                            portal: None,
                        }));
                    }
                    Action::Allow => {}
                }
                let mask = self.mask_ctx(shared, &stmt);
                if let Some(d) = mask_refusal(mask.as_deref()) {
                    return Ok(self.deny(shared, &stmt, &d, Protocol::Simple, query_stand_in()));
                }
                let seq = match self.intend(
                    shared,
                    &stmt,
                    Protocol::Simple,
                    0,
                    "allow",
                    d.rule.as_deref(),
                    query_stand_in,
                ) {
                    Ok(seq) => seq,
                    Err(refused) => return Ok(Verdict::Replace(refused)),
                };
                self.note_prepared(&stmt);
                shared.track(Pending::Simple {
                    seq,
                    stmt,
                    rule: d.rule.map(Arc::from),
                    decision: "allow",
                    started: now,
                    mask,
                });
            }
            FrontendMessage::Parse { name, sql, .. } => {
                let stmt = self.classify(sql);
                let mut d = self.decide(shared, &stmt);
                if d.action != Action::Deny
                    && let Some(refusal) = mask_refusal(self.mask_ctx(shared, &stmt).as_deref())
                {
                    d = refusal;
                }
                if d.action == Action::Deny {
                    // The server will not know this statement; later Binds to it fail.
                    self.statements.remove(name);
                    self.needs_review.remove(name);
                    let mut out = BytesMut::new();
                    frontend::encode_parse(name, UNPARSABLE, &mut out);
                    return Ok(self.deny(shared, &stmt, &d, Protocol::Extended, out));
                }
                // Preparing runs nothing: a statement that needs review is held
                // at each Execute instead, so an approval covers one execution.
                if d.action == Action::Review {
                    self.needs_review.insert(name.to_owned(), d);
                } else {
                    self.needs_review.remove(name);
                }
                self.note_prepared(&stmt);
                self.statements.insert(name.to_owned(), stmt);
            }
            FrontendMessage::Bind {
                portal,
                statement,
                params,
                ..
            } => {
                let stmt = match self.statements.get(statement) {
                    Some(s) => s.clone(),
                    // The server will refuse the Bind; record what was asked.
                    None => self.classify(&format!("-- unknown prepared statement {statement:?}")),
                };
                self.portals.insert(
                    portal.to_owned(),
                    Portal {
                        stmt,
                        parameter_count: u32::try_from(params.len()).unwrap_or(u32::MAX),
                        named: !statement.is_empty(),
                        review: self.needs_review.get(statement).cloned(),
                    },
                );
            }
            FrontendMessage::Execute { portal, .. } => {
                let (stmt, parameter_count, named, review) = match self.portals.get(portal) {
                    Some(p) => (p.stmt.clone(), p.parameter_count, p.named, p.review.clone()),
                    None => (
                        self.classify(&format!("-- unknown portal {portal:?}")),
                        0,
                        false,
                        None,
                    ),
                };
                // Named statements are decided again: the policy may have changed
                // since their Parse. Unnamed ones were decided at their Parse.
                let d = if named {
                    self.decide(shared, &stmt)
                } else {
                    review.unwrap_or_else(Decision::allow_by_default)
                };
                match d.action {
                    Action::Deny => {
                        let mut out = BytesMut::new();
                        frontend::encode_execute(NO_PORTAL, 0, &mut out);
                        return Ok(self.deny(shared, &stmt, &d, Protocol::Extended, out));
                    }
                    Action::Review => {
                        return Ok(Verdict::Review(Held {
                            stmt,
                            decision: d,
                            protocol: Protocol::Extended,
                            frame: frame.bytes.clone(),
                            parameter_count,
                            portal: Some(portal.to_owned()),
                        }));
                    }
                    Action::Allow => {}
                }
                // Right after the client's own Describe of this portal (libpq sends Bind,
                // Describe, Execute, Sync for every statement), that Describe's answer sets
                // up the masker of these rows: nothing comes between the two answers.
                // Only while the session's masking is the one that Describe was seen under.
                let (mask, already_described) = match described {
                    Some((p, ctx))
                        if p == portal
                            && mask::current_index(shared)
                                .is_some_and(|index| Arc::ptr_eq(&index, &ctx.index)) =>
                    {
                        (Some(ctx), true)
                    }
                    _ => (self.mask_ctx(shared, &stmt), false),
                };
                if let Some(d) = mask_refusal(mask.as_deref()) {
                    let mut out = BytesMut::new();
                    frontend::encode_execute(NO_PORTAL, 0, &mut out);
                    return Ok(self.deny(shared, &stmt, &d, Protocol::Extended, out));
                }
                let rule = if named { d.rule } else { None };
                let seq = match self.intend(
                    shared,
                    &stmt,
                    Protocol::Extended,
                    parameter_count,
                    "allow",
                    rule.as_deref(),
                    execute_stand_in,
                ) {
                    Ok(seq) => seq,
                    Err(refused) => return Ok(Verdict::Replace(refused)),
                };
                let describe = if already_described {
                    None
                } else {
                    describe_first(shared, portal, &mask, &frame.bytes)
                };
                shared.track(Pending::Execute {
                    seq,
                    stmt,
                    rule: rule.map(Arc::from),
                    decision: "allow",
                    parameter_count,
                    started: now,
                    mask,
                });
                if let Some(bytes) = describe {
                    return Ok(Verdict::Replace(bytes));
                }
            }
            FrontendMessage::Close { kind, name } => {
                if kind == b'S' {
                    self.statements.remove(name);
                    self.needs_review.remove(name);
                } else {
                    self.portals.remove(name);
                }
            }
            FrontendMessage::Describe { kind, name }
                if shared.mask_active.load(Ordering::Acquire) =>
            {
                let stmt = match kind {
                    b'S' => self.statements.get(name).cloned(),
                    _ => self.portals.get(name).map(|p| p.stmt.clone()),
                };
                let mask = stmt.and_then(|s| self.mask_ctx(shared, &s));
                if kind == b'P'
                    && let Some(ctx) = &mask
                {
                    self.described = Some((name.to_owned(), ctx.clone()));
                }
                shared.track(Pending::Describe {
                    mask,
                    swallow: false,
                });
            }
            FrontendMessage::Sync => shared.track(Pending::Sync),
            FrontendMessage::FunctionCall => {
                let stmt = Arc::new(StatementInfo::opaque(
                    "-- fast-path function call",
                    &["call"],
                ));
                let has_rules = shared
                    .config
                    .borrow()
                    .as_ref()
                    .is_some_and(|c| !c.policy.rule_names().is_empty());
                if has_rules {
                    let d = Decision::built_in_deny(
                        "fast-path-function-call",
                        "fast-path function calls bypass statement policy and are blocked",
                    );
                    // Answered like a failed Query: an error, then ReadyForQuery.
                    return Ok(self.deny(shared, &stmt, &d, Protocol::Simple, query_stand_in()));
                }
                let seq = match self.intend(
                    shared,
                    &stmt,
                    Protocol::Simple,
                    0,
                    "allow",
                    None,
                    query_stand_in,
                ) {
                    Ok(seq) => seq,
                    Err(refused) => return Ok(Verdict::Replace(refused)),
                };
                shared.track(Pending::Simple {
                    seq,
                    stmt,
                    rule: None,
                    decision: "allow",
                    started: now,
                    mask: None,
                });
            }
            _ => {}
        }
        Ok(Verdict::Forward)
    }

    /// An approved held statement: track it and forward the original message.
    pub fn release(&mut self, shared: &Shared, held: Held) -> Verdict {
        let mask = self.mask_ctx(shared, &held.stmt);
        if let Some(d) = mask_refusal(mask.as_deref()) {
            return self.reject(shared, &held, d.message.as_deref().unwrap_or("masked"));
        }
        let stand_in = match held.protocol {
            Protocol::Simple => query_stand_in,
            Protocol::Extended => execute_stand_in,
        };
        let seq = match self.intend(
            shared,
            &held.stmt,
            held.protocol,
            held.parameter_count,
            "review",
            held.decision.rule.as_deref(),
            stand_in,
        ) {
            Ok(seq) => seq,
            Err(refused) => return Verdict::Replace(refused),
        };
        let rule = held.decision.rule.map(Arc::from);
        let started = Instant::now();
        let mut frame = held.frame;
        let pending = match held.protocol {
            Protocol::Simple => {
                self.note_prepared(&held.stmt);
                Pending::Simple {
                    seq,
                    stmt: held.stmt,
                    rule,
                    decision: "review",
                    started,
                    mask,
                }
            }
            Protocol::Extended => {
                if let Some(bytes) =
                    describe_first(shared, held.portal.as_deref().unwrap_or(""), &mask, &frame)
                {
                    frame = bytes;
                }
                Pending::Execute {
                    seq,
                    stmt: held.stmt,
                    rule,
                    decision: "review",
                    parameter_count: held.parameter_count,
                    started,
                    mask,
                }
            }
        };
        shared.track(pending);
        Verdict::Replace(frame)
    }

    /// A held statement that was not approved: it fails like a denial.
    pub fn reject(&mut self, shared: &Shared, held: &Held, why: &str) -> Verdict {
        let mut d = held.decision.clone();
        d.action = Action::Deny;
        d.message = Some(why.to_owned());
        let stand_in = match held.protocol {
            Protocol::Simple => query_stand_in(),
            Protocol::Extended => {
                let mut out = BytesMut::new();
                frontend::encode_execute(NO_PORTAL, 0, &mut out);
                out
            }
        };
        self.deny(shared, &held.stmt, &d, held.protocol, stand_in)
    }

    /// Registers a denial: its audit event, and the error the client gets.
    fn deny(
        &mut self,
        shared: &Shared,
        stmt: &Arc<StatementInfo>,
        d: &Decision,
        protocol: Protocol,
        stand_in: BytesMut,
    ) -> Verdict {
        let rule = d.rule.as_deref().unwrap_or("policy");
        let reason = d.message.as_deref().unwrap_or("blocked by policy");
        let message = format!("countersign: denied by rule \"{rule}\": {reason}");
        let mut error = BytesMut::new();
        backend::encode_error(
            &ErrorNotice {
                severity: Severity::Error,
                code: "42501",
                message: &message,
                detail: None,
                hint: Some("the statement did not reach the database"),
            },
            &mut error,
        );
        shared.track(Pending::Denied {
            error: error.freeze(),
            simple: protocol == Protocol::Simple,
        });
        tracing::info!(session = %shared.session_id, rule, "statement denied");
        shared.metrics.statement("deny");
        self.decision_event = Some(shared.next_event(AuditBody::Statement(StatementEvent {
            identity: shared.identity.clone(),
            resource: shared.resource.clone(),
            statement: stmt.sql.clone(),
            kinds: stmt.kinds.clone(),
            protocol,
            parameter_count: 0,
            duration: Duration::ZERO,
            command_tag: None,
            rows: None,
            error: Some(message),
            decision: "deny",
            rule: Some(rule.to_owned()),
            masking: None,
        })));
        shared.statements_count_one();
        Verdict::Replace(stand_in.freeze())
    }
}

/// The denial a statement's masking asks for, if any.
fn mask_refusal(mask: Option<&MaskCtx>) -> Option<Decision> {
    let ctx = mask?;
    let (rule, why) = ctx.stmt.refuse.as_ref()?;
    let name = ctx.index.rule(*rule).map_or("mask", |r| r.name.as_str());
    Some(Decision::built_in_deny(name, why))
}

/// Under masking, an Execute goes upstream behind a Describe of its portal, whose answer
/// (tracked, and not passed on) tells the upstream half the columns and formats of the rows
/// that follow. Returns the bytes to send instead of the Execute.
fn describe_first(
    shared: &Shared,
    portal: &str,
    mask: &Option<Arc<MaskCtx>>,
    execute: &Bytes,
) -> Option<Bytes> {
    mask.as_ref()?;
    let mut out = BytesMut::with_capacity(execute.len() + portal.len() + 6);
    frontend::encode_describe(b'P', portal, &mut out);
    out.extend_from_slice(execute);
    shared.track(Pending::Describe {
        mask: mask.clone(),
        swallow: true,
    });
    Some(out.freeze())
}
