//! Audit events: stored idempotently by `(session_id, seq)` and searched.
//!
//! Inserting the same event twice is a no-op, so a gateway may resend a batch
//! after a lost acknowledgement without doubling anything.

use super::entity::audit_event;
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;

/// Rows per INSERT: keeps bound parameters well under SQLite's and PostgreSQL's limits.
const INSERT_CHUNK: usize = 256;

/// One event as a gateway reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAuditEvent {
    pub session_id: String,
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub identity: String,
    pub resource: String,
    pub body: AuditBody,
}

/// What happened. A typed enum, never a free-form string.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditBody {
    SessionStarted {
        database: String,
        client_address: String,
        application_name: String,
        tls: bool,
    },
    Statement(StatementAudit),
    SessionEnded {
        reason: String,
        statements: u64,
    },
    /// A review's life: stored under session id `review:<review_id>`.
    Review {
        /// `opened`, `approved`, `denied`, `refused` or `expired`.
        action: String,
        review_id: String,
        /// Action-specific fields (for `refused`, the `reason`); an object.
        detail: serde_json::Value,
    },
    /// A grant's life: stored under session id `grant:<grant_id>`.
    Grant {
        /// `requested`, `approved`, `denied`, `refused`, `expired` or `revoked`.
        action: String,
        grant_id: String,
        /// Action-specific fields; an object.
        detail: serde_json::Value,
    },
    /// A credential exchange (API key or workload token), accepted or
    /// refused: stored under session id `auth:<service account>`.
    Auth {
        /// `api_key_exchanged`, `workload_exchanged` or `refused`.
        action: String,
        /// Exchange-specific fields (for `refused`, the `reason`); an object.
        detail: serde_json::Value,
    },
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct StatementAudit {
    pub statement: String,
    pub kinds: Vec<String>,
    pub protocol: String,
    pub parameter_count: u32,
    pub duration_us: u64,
    pub command_tag: Option<String>,
    pub rows: Option<u64>,
    pub error: Option<String>,
    pub decision: String,
    pub rule: Option<String>,
    /// Values masked in the results: `{"rules": {name: n}, "detectors": {name: n}}`.
    pub masking: Option<serde_json::Value>,
}

/// An event as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    /// `<session_id>:<seq>`, stable across retries.
    pub id: String,
    pub session_id: String,
    pub seq: u64,
    /// `session_started`, `statement` or `session_ended`.
    pub event: String,
    pub identity: String,
    pub resource: String,
    pub statement: Option<String>,
    pub kinds: Vec<String>,
    pub protocol: Option<String>,
    pub parameter_count: Option<u32>,
    pub duration_us: Option<u64>,
    pub command_tag: Option<String>,
    pub rows: Option<u64>,
    pub error: Option<String>,
    pub decision: Option<String>,
    pub rule: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// Search filters; all optional and combined with AND.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub identity: Option<String>,
    pub resource: Option<String>,
    pub session_id: Option<String>,
    pub event: Option<String>,
    /// Case-sensitive substring of the statement text.
    pub text: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u64,
}

pub(super) fn to_row(
    e: &NewAuditEvent,
    received_at: DateTime<Utc>,
) -> Result<audit_event::ActiveModel, StoreError> {
    let seq = i64::try_from(e.seq).map_err(|_| StoreError::Corrupt(format!("seq {}", e.seq)))?;
    let mut row = audit_event::ActiveModel {
        session_id: Set(e.session_id.clone()),
        seq: Set(seq),
        at: Set(e.at),
        event: Set(String::new()),
        identity: Set(e.identity.clone()),
        resource: Set(e.resource.clone()),
        statement: Set(None),
        kinds: Set("[]".to_owned()),
        protocol: Set(None),
        parameter_count: Set(None),
        duration_us: Set(None),
        command_tag: Set(None),
        rows: Set(None),
        error: Set(None),
        decision: Set(None),
        rule: Set(None),
        detail: Set(None),
        received_at: Set(received_at),
    };
    let json = |v: serde_json::Value| Some(v.to_string());
    match &e.body {
        AuditBody::SessionStarted {
            database,
            client_address,
            application_name,
            tls,
        } => {
            row.event = Set("session_started".to_owned());
            row.detail = Set(json(serde_json::json!({
                "database": database,
                "client_address": client_address,
                "application_name": application_name,
                "tls": tls,
            })));
        }
        AuditBody::Statement(s) => {
            row.event = Set("statement".to_owned());
            row.statement = Set(Some(s.statement.clone()));
            row.kinds = Set(serde_json::Value::from(s.kinds.clone()).to_string());
            row.protocol = Set(Some(s.protocol.clone()));
            row.parameter_count = Set(Some(i32::try_from(s.parameter_count).unwrap_or(i32::MAX)));
            row.duration_us = Set(Some(i64::try_from(s.duration_us).unwrap_or(i64::MAX)));
            row.command_tag = Set(s.command_tag.clone());
            row.rows = Set(s.rows.map(|r| i64::try_from(r).unwrap_or(i64::MAX)));
            row.error = Set(s.error.clone());
            row.decision = Set(Some(s.decision.clone()));
            row.rule = Set(s.rule.clone());
            row.detail = Set(s
                .masking
                .as_ref()
                .map(|m| serde_json::json!({ "masking": m }).to_string()));
        }
        AuditBody::SessionEnded { reason, statements } => {
            row.event = Set("session_ended".to_owned());
            row.detail = Set(json(serde_json::json!({
                "reason": reason,
                "statements": statements,
            })));
        }
        AuditBody::Review {
            action,
            review_id,
            detail,
        } => {
            row.event = Set("review".to_owned());
            row.detail = Set(json(action_detail(
                action,
                Some(("review_id", review_id)),
                detail,
            )));
        }
        AuditBody::Grant {
            action,
            grant_id,
            detail,
        } => {
            row.event = Set("grant".to_owned());
            row.detail = Set(json(action_detail(
                action,
                Some(("grant_id", grant_id)),
                detail,
            )));
        }
        AuditBody::Auth { action, detail } => {
            row.event = Set("auth".to_owned());
            row.detail = Set(json(action_detail(action, None, detail)));
        }
    }
    Ok(row)
}

/// `detail` as an object, with `action` and the subject's id added.
fn action_detail(
    action: &str,
    id: Option<(&str, &str)>,
    detail: &serde_json::Value,
) -> serde_json::Value {
    let mut fields = match detail {
        serde_json::Value::Object(m) => m.clone(),
        serde_json::Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("detail".to_owned(), other.clone())]),
    };
    fields.insert("action".to_owned(), action.into());
    if let Some((key, id)) = id {
        fields.insert(key.to_owned(), id.into());
    }
    serde_json::Value::Object(fields)
}

fn to_view(m: audit_event::Model) -> Result<AuditEventView, StoreError> {
    let corrupt =
        |what: &str| StoreError::Corrupt(format!("audit {}:{} {what}", m.session_id, m.seq));
    let kinds: Vec<String> = serde_json::from_str(&m.kinds).map_err(|_| corrupt("kinds"))?;
    let detail = match &m.detail {
        Some(d) => Some(serde_json::from_str(d).map_err(|_| corrupt("detail"))?),
        None => None,
    };
    let seq = u64::try_from(m.seq).map_err(|_| corrupt("seq"))?;
    Ok(AuditEventView {
        id: format!("{}:{}", m.session_id, m.seq),
        session_id: m.session_id,
        seq,
        event: m.event,
        identity: m.identity,
        resource: m.resource,
        statement: m.statement,
        kinds,
        protocol: m.protocol,
        parameter_count: m.parameter_count.and_then(|v| u32::try_from(v).ok()),
        duration_us: m.duration_us.and_then(|v| u64::try_from(v).ok()),
        command_tag: m.command_tag,
        rows: m.rows.and_then(|v| u64::try_from(v).ok()),
        error: m.error,
        decision: m.decision,
        rule: m.rule,
        detail,
        at: m.at,
    })
}

impl Store {
    /// Stores events, skipping any already stored. Returns how many were new.
    pub async fn insert_audit_events(&self, events: &[NewAuditEvent]) -> Result<u64, StoreError> {
        let received_at = Utc::now();
        let mut stored = 0;
        for chunk in events.chunks(INSERT_CHUNK) {
            let rows = chunk
                .iter()
                .map(|e| to_row(e, received_at))
                .collect::<Result<Vec<_>, _>>()?;
            let res = audit_event::Entity::insert_many(rows)
                .on_conflict_do_nothing_on([
                    audit_event::Column::SessionId,
                    audit_event::Column::Seq,
                ])
                .exec_without_returning(self.db())
                .await?;
            if let sea_orm::TryInsertResult::Inserted(n) = res {
                stored += n;
            }
        }
        Ok(stored)
    }

    /// The newest `filter.limit` matching events, returned oldest first.
    pub async fn search_audit(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEventView>, StoreError> {
        use audit_event::Column as C;
        let mut q = audit_event::Entity::find();
        if let Some(v) = &filter.identity {
            q = q.filter(C::Identity.eq(v.as_str()));
        }
        if let Some(v) = &filter.resource {
            q = q.filter(C::Resource.eq(v.as_str()));
        }
        if let Some(v) = &filter.session_id {
            q = q.filter(C::SessionId.eq(v.as_str()));
        }
        if let Some(v) = &filter.event {
            q = q.filter(C::Event.eq(v.as_str()));
        }
        if let Some(v) = &filter.text {
            q = q.filter(C::Statement.contains(v.as_str()));
        }
        if let Some(v) = filter.since {
            q = q.filter(C::At.gte(v));
        }
        if let Some(v) = filter.until {
            q = q.filter(C::At.lt(v));
        }
        let mut models = q
            .order_by_desc(C::At)
            .order_by_desc(C::SessionId)
            .order_by_desc(C::Seq)
            .limit(filter.limit)
            .all(self.db())
            .await?;
        models.reverse();
        models.into_iter().map(to_view).collect()
    }
}

/// Where a keyset scan over statement events stopped: `(at, session_id, seq)`.
pub type AuditCursor = (DateTime<Utc>, String, i64);

impl Store {
    /// Statement events at or after `since`, oldest first, strictly after
    /// `cursor`, at most `limit`. Keyset pagination: no event is skipped or
    /// repeated however many share a timestamp.
    pub async fn statements_after(
        &self,
        since: DateTime<Utc>,
        cursor: Option<&AuditCursor>,
        limit: u64,
    ) -> Result<(Vec<AuditEventView>, Option<AuditCursor>), StoreError> {
        use audit_event::Column as C;
        use sea_orm::Condition;
        let mut q = audit_event::Entity::find()
            .filter(C::Event.eq("statement"))
            .filter(C::At.gte(since));
        if let Some((at, session, seq)) = cursor {
            q = q.filter(
                Condition::any().add(C::At.gt(*at)).add(
                    Condition::all().add(C::At.eq(*at)).add(
                        Condition::any().add(C::SessionId.gt(session.as_str())).add(
                            Condition::all()
                                .add(C::SessionId.eq(session.as_str()))
                                .add(C::Seq.gt(*seq)),
                        ),
                    ),
                ),
            );
        }
        let models = q
            .order_by_asc(C::At)
            .order_by_asc(C::SessionId)
            .order_by_asc(C::Seq)
            .limit(limit)
            .all(self.db())
            .await?;
        let next = models.last().map(|m| (m.at, m.session_id.clone(), m.seq));
        let views = models.into_iter().map(to_view).collect::<Result<_, _>>()?;
        Ok((views, next))
    }
}
