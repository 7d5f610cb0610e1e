//! `policy replay`: what a draft policy would have done to real audit history.
//!
//! Statement events are read in keyset pages, classified again with the same
//! classifier the gateway runs, and decided with the draft policy in the
//! context each session had (identity, groups, resource, environment).
//!
//! Not guaranteed: sessions recorded before groups were stored replay with no
//! groups; a statement's access level is not yet part of the record.

use crate::service::{ControlPlane, ServiceError};
use chrono::{DateTime, Utc};
use countersign_policy::{Action, FactsCache, Policy, SessionContext, decide};
use std::collections::HashMap;

/// Statement events read per page.
const PAGE: u64 = 2_000;
/// Most findings listed in one report (the counts cover everything).
const MAX_FINDINGS: usize = 1_000;

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ReplayFinding {
    pub id: String,
    pub at: DateTime<Utc>,
    pub identity: String,
    pub resource: String,
    pub statement: String,
    /// What the gateway decided at the time.
    pub decided: Option<String>,
    /// What the draft policy would decide: `deny` or `review`.
    pub would: String,
    pub rule: Option<String>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct ReplayReport {
    pub examined: u64,
    pub would_deny: u64,
    pub would_review: u64,
    pub findings: Vec<ReplayFinding>,
    /// True when there were more findings than listed.
    pub truncated: bool,
}

impl ControlPlane {
    pub async fn replay_policy(
        &self,
        text: &str,
        since: DateTime<Utc>,
    ) -> Result<ReplayReport, ServiceError> {
        let policy = Policy::parse(text).map_err(|e| ServiceError::InvalidPolicy(e.to_string()))?;
        let store = self.store();
        let environments: HashMap<String, String> = store
            .list_resources()
            .await?
            .into_iter()
            .map(|r| (r.name, r.environment))
            .collect();
        let mut groups: HashMap<String, Vec<String>> = HashMap::new();
        let mut cache = FactsCache::new(4_096);
        let mut report = ReplayReport::default();
        let mut cursor = None;
        loop {
            let (events, next) = store.statements_after(since, cursor.as_ref(), PAGE).await?;
            if events.is_empty() {
                break;
            }
            for e in events {
                report.examined += 1;
                let Some(sql) = e.statement.as_deref() else {
                    continue;
                };
                if !groups.contains_key(&e.session_id) {
                    let g = store
                        .session(&e.session_id)
                        .await?
                        .map(|s| s.groups)
                        .unwrap_or_default();
                    groups.insert(e.session_id.clone(), g);
                }
                let session_groups = groups
                    .get(&e.session_id)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let ctx = SessionContext {
                    identity: &e.identity,
                    groups: session_groups,
                    resource: &e.resource,
                    environment: environments
                        .get(&e.resource)
                        .map(String::as_str)
                        .unwrap_or(""),
                    access_level: None,
                };
                let facts = cache.get_or_classify(sql);
                let d = decide(&policy, &ctx, &facts, sql);
                match d.action {
                    Action::Allow => continue,
                    Action::Deny => report.would_deny += 1,
                    Action::Review => report.would_review += 1,
                }
                if report.findings.len() >= MAX_FINDINGS {
                    report.truncated = true;
                    continue;
                }
                report.findings.push(ReplayFinding {
                    id: e.id.clone(),
                    at: e.at,
                    identity: e.identity.clone(),
                    resource: e.resource.clone(),
                    statement: sql.to_owned(),
                    decided: e.decision.clone(),
                    would: d.action.as_str().to_owned(),
                    rule: d.rule,
                    message: d.message,
                });
            }
            cursor = next;
        }
        Ok(report)
    }
}
