//! Audit events: stored idempotently by `(session_id, seq)`, hash-chained per
//! session, checkpointed, verified, searched and exported.
//!
//! Inserting the same event twice is a no-op, so a gateway may resend a batch
//! after a lost acknowledgement without doubling anything.
//!
//! Layout: [`chain`] (the per-session HMAC chain and the insert path),
//! [`checkpoint`] (periodic and purge checkpoints), [`verify`] (the walk that
//! names tampered rows), [`retention`] (the purge job), [`stream`] (arrival
//! order and cursors for the SIEM stream).

pub mod chain;
pub mod checkpoint;
mod ingest;
pub mod retention;
pub mod stream;
pub mod verify;

use super::entity::audit_event;
use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait};
use serde::Serialize;

/// `t` cut to whole microseconds: what both backends store, and so what the
/// chain hashes.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

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
        /// `requested`, `approved`, `denied`, `refused`, `expired`, `revoked` or `used`
        /// (a session opened under the grant).
        action: String,
        grant_id: String,
        /// Action-specific fields; an object.
        detail: serde_json::Value,
    },
    /// A credential exchange (API key or workload token) or a sign-in
    /// (OIDC), accepted or refused: stored under session id
    /// `auth:<service account or email>` (`auth:oidc` before anyone is identified).
    Auth {
        /// `api_key_exchanged`, `workload_exchanged`, `oidc_login`,
        /// `cli_token_issued`, `logout` or `refused`.
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
    /// Substring of the statement text, case-insensitive (ASCII on SQLite);
    /// `%`, `_` and `\\` match themselves.
    pub text: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The event's decision (`allow`, `deny`, `review`, ...), exactly.
    pub decision: Option<String>,
    /// A statement kind the classifier gave the event (`select`, `delete`, ...).
    pub kind: Option<String>,
    /// Only events strictly older than this `(at, session_id, seq)`: the next
    /// page of a newest-first search.
    pub older_than: Option<AuditCursor>,
    pub limit: u64,
}

/// The row `e` is stored as, before chaining (chain fields empty).
pub(super) fn to_model(
    e: &NewAuditEvent,
    received_at: DateTime<Utc>,
) -> Result<audit_event::Model, StoreError> {
    let seq = i64::try_from(e.seq).map_err(|_| StoreError::Corrupt(format!("seq {}", e.seq)))?;
    let mut row = audit_event::Model {
        session_id: e.session_id.clone(),
        seq,
        at: micros(e.at),
        event: String::new(),
        identity: e.identity.clone(),
        resource: e.resource.clone(),
        statement: None,
        kinds: "[]".to_owned(),
        protocol: None,
        parameter_count: None,
        duration_us: None,
        command_tag: None,
        rows: None,
        error: None,
        decision: None,
        rule: None,
        detail: None,
        received_at: micros(received_at),
        prev_seq: None,
        prev_hash: None,
        chain_hash: None,
    };
    let json = |v: serde_json::Value| Some(v.to_string());
    match &e.body {
        AuditBody::SessionStarted {
            database,
            client_address,
            application_name,
            tls,
        } => {
            row.event = "session_started".to_owned();
            row.detail = json(serde_json::json!({
                "database": database,
                "client_address": client_address,
                "application_name": application_name,
                "tls": tls,
            }));
        }
        AuditBody::Statement(s) => {
            row.event = "statement".to_owned();
            row.statement = Some(s.statement.clone());
            row.kinds = serde_json::Value::from(s.kinds.clone()).to_string();
            row.protocol = Some(s.protocol.clone());
            row.parameter_count = Some(i32::try_from(s.parameter_count).unwrap_or(i32::MAX));
            row.duration_us = Some(i64::try_from(s.duration_us).unwrap_or(i64::MAX));
            row.command_tag = s.command_tag.clone();
            row.rows = s.rows.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
            row.error = s.error.clone();
            row.decision = Some(s.decision.clone());
            row.rule = s.rule.clone();
            row.detail = s
                .masking
                .as_ref()
                .map(|m| serde_json::json!({ "masking": m }).to_string());
        }
        AuditBody::SessionEnded { reason, statements } => {
            row.event = "session_ended".to_owned();
            row.detail = json(serde_json::json!({
                "reason": reason,
                "statements": statements,
            }));
        }
        AuditBody::Review {
            action,
            review_id,
            detail,
        } => {
            row.event = "review".to_owned();
            row.detail = json(action_detail(
                action,
                Some(("review_id", review_id)),
                detail,
            ));
        }
        AuditBody::Grant {
            action,
            grant_id,
            detail,
        } => {
            row.event = "grant".to_owned();
            row.detail = json(action_detail(action, Some(("grant_id", grant_id)), detail));
        }
        AuditBody::Auth { action, detail } => {
            row.event = "auth".to_owned();
            row.detail = json(action_detail(action, None, detail));
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
    /// Stores and chains events, skipping any already stored. Returns how
    /// many were new. Sessions lock only their own chain head (see [`chain`]).
    pub async fn insert_audit_events(&self, events: &[NewAuditEvent]) -> Result<u64, StoreError> {
        if self.db().get_database_backend() == sea_orm::DbBackend::Postgres {
            let texts = ingest::batch_texts(events);
            let mut tx = ingest::PgIngest::begin(self.db().get_postgres_connection_pool()).await?;
            tx.store_texts(&texts).await?;
            let rows = chain::chain_new(&tx, self.audit_key(), events).await?;
            tx.copy_and_commit(&rows).await?;
            return Ok(rows.len() as u64);
        }
        let txn = self.db().begin().await?;
        let stored = chain::insert_chained(&txn, self.audit_key(), events).await?;
        txn.commit().await?;
        Ok(stored)
    }

    /// The newest `filter.limit` matching events, returned oldest first.
    ///
    /// With a text filter, in two steps, because which plan is fast depends on
    /// how common the text is, which the planner cannot estimate for
    /// `ILIKE '%…%'`: first the text is matched within the newest
    /// [`TEXT_WINDOW`] events that match everything else (one ordered index
    /// range, fast when the text is common); only if that finds too few and
    /// the range goes on does a second query search the older part, where the
    /// trigram index serves a rare text.
    pub async fn search_audit(
        &self,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEventView>, StoreError> {
        let backend = self.db().get_database_backend();
        let mut models = match &filter.text {
            None => {
                newest_first(filtered(filter, backend))
                    .limit(filter.limit)
                    .all(self.db())
                    .await?
            }
            Some(text) => self.search_text(filter, text, backend).await?,
        };
        models.reverse();
        models.into_iter().map(to_view).collect()
    }

    async fn search_text(
        &self,
        filter: &AuditFilter,
        text: &str,
        backend: sea_orm::DbBackend,
    ) -> Result<Vec<audit_event::Model>, StoreError> {
        use audit_event::Column as C;
        use sea_orm::QueryTrait;
        use sea_orm::sea_query::{Alias, Asterisk, Order, Query};
        let rest = AuditFilter {
            text: None,
            ..filter.clone()
        };
        let window = newest_first(filtered(&rest, backend))
            .limit(TEXT_WINDOW)
            .into_query();
        let mut in_window = Query::select();
        in_window
            .column(Asterisk)
            .from_subquery(window, Alias::new("w"))
            .and_where(text_matches(text, backend))
            .order_by(C::At, Order::Desc)
            .order_by(C::SessionId, Order::Desc)
            .order_by(C::Seq, Order::Desc)
            .limit(filter.limit);
        let mut found = audit_event::Entity::find()
            .from_raw_sql(backend.build(&in_window))
            .all(self.db())
            .await?;
        let short = filter.limit.saturating_sub(found.len() as u64);
        if short == 0 {
            return Ok(found);
        }
        // The window's oldest event, if the window was full.
        let Some(edge) = newest_first(filtered(&rest, backend))
            .offset(TEXT_WINDOW - 1)
            .limit(1)
            .one(self.db())
            .await?
        else {
            return Ok(found);
        };
        let edge = before(&(edge.at, edge.session_id, edge.seq));
        let older = if backend == sea_orm::DbBackend::Postgres {
            self.search_older_pg(&rest, text, edge, short).await?
        } else {
            newest_first(filtered(filter, backend).filter(edge))
                .limit(short)
                .all(self.db())
                .await?
        };
        found.extend(older);
        Ok(found)
    }

    /// The newest `limit` events that match `rest`, are older than `edge` and whose text
    /// contains `text`, on PostgreSQL, in one query: the events with their text in their row
    /// only, through the partial trigram index, and the events of each parameterized text that
    /// matches, found in `audit_texts` through its own trigram index and followed into the
    /// events by `audit_events_statement_digest` (migration m0012), newest first. Every event
    /// is in exactly one of the two: its digest is NULL, or its text is in `audit_texts` under
    /// its digest (stored in the same transaction, and purged only once no event points to it).
    async fn search_older_pg(
        &self,
        rest: &AuditFilter,
        text: &str,
        edge: sea_orm::Condition,
        limit: u64,
    ) -> Result<Vec<audit_event::Model>, StoreError> {
        use audit_event::Column as C;
        use sea_orm::QueryTrait;
        use sea_orm::sea_query::{
            Alias, Asterisk, Expr, ExprTrait, JoinType, Order, Query, UnionType,
        };
        let backend = sea_orm::DbBackend::Postgres;
        let digest = || Expr::col((audit_event::Entity, Alias::new("statement_digest")));
        let inline = newest_first(
            filtered(rest, backend)
                .filter(edge.clone())
                .filter(text_matches(text, backend))
                .filter(digest().is_null()),
        )
        .limit(limit)
        .into_query();
        let (texts, events) = (Alias::new("t"), Alias::new("e"));
        let per_text = newest_first(
            filtered(rest, backend)
                .filter(edge)
                .filter(digest().equals((texts.clone(), Alias::new("digest")))),
        )
        .limit(limit)
        .into_query();
        let mut parameterized = Query::select();
        parameterized
            .column((events.clone(), Asterisk))
            .from_as(Alias::new("audit_texts"), texts.clone())
            .join_lateral(JoinType::InnerJoin, per_text, events, Expr::val(true))
            .and_where(contains(Expr::col((texts, C::Statement)), text, backend));
        let mut q = Query::select();
        q.column(Asterisk)
            .from_subquery(inline, Alias::new("i"))
            .union(UnionType::All, parameterized)
            .order_by(C::At, Order::Desc)
            .order_by(C::SessionId, Order::Desc)
            .order_by(C::Seq, Order::Desc)
            .limit(limit);
        Ok(audit_event::Entity::find()
            .from_raw_sql(backend.build(&q))
            .all(self.db())
            .await?)
    }

    /// One session's events in seq order, after `after_seq`, at most `limit`.
    pub async fn session_events(
        &self,
        session_id: &str,
        after_seq: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditEventView>, StoreError> {
        use audit_event::Column as C;
        let mut q = audit_event::Entity::find().filter(C::SessionId.eq(session_id));
        if let Some(s) = after_seq {
            q = q.filter(C::Seq.gt(s));
        }
        q.order_by_asc(C::Seq)
            .limit(limit)
            .all(self.db())
            .await?
            .into_iter()
            .map(to_view)
            .collect()
    }

    /// Events matching `filter` (its `limit` ignored), oldest first, strictly
    /// after `cursor`, at most `limit`: a keyset page for export.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        cursor: Option<&AuditCursor>,
        limit: u64,
    ) -> Result<(Vec<AuditEventView>, Option<AuditCursor>), StoreError> {
        keyset_page(
            self,
            filtered(filter, self.db().get_database_backend()),
            cursor,
            limit,
        )
        .await
    }
}

/// Events a text search matches within before it searches older ones (see
/// [`Store::search_audit`]).
const TEXT_WINDOW: u64 = 10_000;

/// `q` newest first, in `(at, session_id, seq)` order.
fn newest_first(q: sea_orm::Select<audit_event::Entity>) -> sea_orm::Select<audit_event::Entity> {
    use audit_event::Column as C;
    q.order_by_desc(C::At)
        .order_by_desc(C::SessionId)
        .order_by_desc(C::Seq)
}

/// Events strictly older than `cursor` in `(at, session_id, seq)` order.
fn before(cursor: &AuditCursor) -> sea_orm::Condition {
    use audit_event::Column as C;
    use sea_orm::Condition;
    let (at, session, seq) = cursor;
    Condition::any().add(C::At.lt(*at)).add(
        Condition::all().add(C::At.eq(*at)).add(
            Condition::any().add(C::SessionId.lt(session.as_str())).add(
                Condition::all()
                    .add(C::SessionId.eq(session.as_str()))
                    .add(C::Seq.lt(*seq)),
            ),
        ),
    )
}

/// The query for `filter`'s conditions.
fn filtered(
    filter: &AuditFilter,
    backend: sea_orm::DbBackend,
) -> sea_orm::Select<audit_event::Entity> {
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
        q = q.filter(text_matches(v, backend));
    }
    if let Some(v) = filter.since {
        q = q.filter(C::At.gte(v));
    }
    if let Some(v) = filter.until {
        q = q.filter(C::At.lt(v));
    }
    if let Some(v) = &filter.decision {
        q = q.filter(C::Decision.eq(v.as_str()));
    }
    if let Some(v) = &filter.kind {
        // `kinds` is a JSON array of plain lowercase words, so the quoted
        // word matches exactly one element. Only such words are accepted.
        if v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') && !v.is_empty() {
            q = q.filter(C::Kinds.contains(format!("\"{v}\"")));
        } else {
            q = q.filter(sea_orm::sea_query::Expr::val(false));
        }
    }
    if let Some(cursor) = &filter.older_than {
        q = q.filter(before(cursor));
    }
    q
}

/// `statement` contains `text`, ignoring case: `ILIKE` on PostgreSQL (served
/// by the partial trigram index of migration m0012 where the query also asks
/// for `statement_digest IS NULL`), `LIKE` on SQLite (which ignores ASCII
/// case). The text's own `%`, `_` and `\` are escaped.
fn text_matches(text: &str, backend: sea_orm::DbBackend) -> sea_orm::sea_query::SimpleExpr {
    // Unqualified: the same expression filters the table and a subquery of it.
    contains(
        sea_orm::sea_query::Expr::col(audit_event::Column::Statement),
        text,
        backend,
    )
}

/// `column` contains `text`, as [`text_matches`] describes.
fn contains(
    column: sea_orm::sea_query::Expr,
    text: &str,
    backend: sea_orm::DbBackend,
) -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::{ExprTrait, LikeExpr, extension::postgres::PgExpr};
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    match backend {
        // Backslash is PostgreSQL's default LIKE escape.
        sea_orm::DbBackend::Postgres => column.ilike(LikeExpr::new(pattern)),
        _ => column.like(LikeExpr::new(pattern).escape('\\')),
    }
}

/// One keyset page of `q` in `(at, session_id, seq)` order after `cursor`.
async fn keyset_page(
    store: &Store,
    mut q: sea_orm::Select<audit_event::Entity>,
    cursor: Option<&AuditCursor>,
    limit: u64,
) -> Result<(Vec<AuditEventView>, Option<AuditCursor>), StoreError> {
    use audit_event::Column as C;
    use sea_orm::Condition;
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
        .all(store.db())
        .await?;
    let next = models.last().map(|m| (m.at, m.session_id.clone(), m.seq));
    let views = models.into_iter().map(to_view).collect::<Result<_, _>>()?;
    Ok((views, next))
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
        let q = audit_event::Entity::find()
            .filter(C::Event.eq("statement"))
            .filter(C::At.gte(since));
        keyset_page(self, q, cursor, limit).await
    }
}
