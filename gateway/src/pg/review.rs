//! Holding a statement for review.
//!
//! The client is told at once, with a NoticeResponse carrying the review id
//! and the console link; then the session waits (reading nothing more from the
//! client, so later pipelined messages stay queued behind the held one) until
//! the review is approved, denied or times out. Approval forwards the original
//! message; anything else makes it fail like a denial, and the session stays
//! usable. If the control plane cannot open the review, the statement fails:
//! nothing that needs approval runs without it.
//!
//! Not guaranteed: while a statement is held inside a transaction, the
//! upstream transaction stays open (and is subject to the server's
//! `idle_in_transaction_session_timeout`).

use super::inspect::Held;
use super::relay::{Inject, Shared};
use super::wire::backend::{self, ErrorNotice, Severity};
use crate::control::{ReviewOutcome, ReviewRequest};
use bytes::BytesMut;

/// What became of a held statement.
pub enum HoldResult {
    Approved,
    /// Not approved; the reason goes into the client's error.
    Refused(String),
}

/// Opens the review, tells the client, and waits for the outcome.
pub async fn hold(shared: &Shared, held: &Held) -> HoldResult {
    let rule = held
        .decision
        .rule
        .clone()
        .unwrap_or_else(|| "policy".to_owned());
    let request = ReviewRequest {
        session_id: shared.session_id.to_string(),
        identity: shared.identity.to_string(),
        resource: shared.resource.to_string(),
        statement: held.stmt.sql.to_string(),
        kinds: held.stmt.kinds.iter().map(|k| (*k).to_owned()).collect(),
        rule: rule.clone(),
        message: held.decision.message.clone().unwrap_or_default(),
        approvals: held.decision.approvals.max(1),
        approvers: held.decision.approvers.clone(),
        timeout: shared.review_timeout,
        max_approval_minutes: held.decision.max_approval_minutes,
    };
    let deadline = tokio::time::Instant::now() + shared.review_timeout;
    let ticket = match shared.control.open_review(request).await {
        Ok(t) => t,
        Err(reason) => {
            tracing::warn!(session = %shared.session_id, %reason, "cannot open a review; refusing the statement");
            return HoldResult::Refused(format!(
                "this statement needs approval, and no review could be opened ({reason})"
            ));
        }
    };
    tracing::info!(session = %shared.session_id, review = %ticket.id, rule, "statement held for review");
    let text = format!(
        "countersign: statement held for review {} (rule \"{rule}\"); an approver can decide it at {}",
        ticket.id, ticket.url
    );
    let mut notice = BytesMut::new();
    backend::encode_notice(
        &ErrorNotice {
            severity: Severity::Notice,
            code: "00000",
            message: &text,
            detail: held.decision.message.as_deref(),
            hint: Some("the statement runs once it is approved"),
        },
        &mut notice,
    );
    let _ = shared.inject.send(Inject::Notice(notice.freeze())).await;
    let waited = std::time::Instant::now();
    let outcome = shared.control.wait_review(&ticket.id, deadline).await;
    shared
        .metrics
        .review_wait_seconds
        .observe(waited.elapsed().as_secs_f64());
    match outcome {
        ReviewOutcome::Approved => HoldResult::Approved,
        ReviewOutcome::Denied { by, comment } => {
            let comment = if comment.is_empty() {
                String::new()
            } else {
                format!(": {comment}")
            };
            HoldResult::Refused(format!("review {} was denied by {by}{comment}", ticket.id))
        }
        ReviewOutcome::Expired => HoldResult::Refused(format!(
            "review {} was not approved within {} s",
            ticket.id,
            shared.review_timeout.as_secs()
        )),
    }
}
