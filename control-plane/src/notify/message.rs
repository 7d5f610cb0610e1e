//! What is sent: the signed webhook body and the Slack line. Pure functions.

use super::{Event, NotifyError};
use crate::reviews::ReviewView;
use countersign_common::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Most characters of the statement a Slack message shows.
pub const SLACK_STATEMENT_CHARS: usize = 200;

/// A request body and its extra headers.
pub(super) type Built = (Vec<u8>, Vec<(&'static str, String)>);

/// `sha256=<hex HMAC-SHA256 of body under secret>`, the value of
/// `X-Countersign-Signature`. A receiver recomputes it over the exact body
/// bytes it received and compares in constant time.
pub fn signature(secret: &[u8], body: &[u8]) -> Result<String, NotifyError> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .map_err(|e| NotifyError::Encode(e.to_string()))?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// The webhook body (`{event, <key>: subject, sent_at, delivery_id}`; the
/// time is when the delivery was built, and retries send the same bytes) and
/// its `X-Countersign-*` headers.
pub(super) fn webhook(
    event: &'static str,
    key: &'static str,
    subject: &serde_json::Value,
    delivery_id: uuid::Uuid,
    secret: &Secret<String>,
) -> Result<Built, NotifyError> {
    let mut fields = serde_json::Map::new();
    fields.insert("event".into(), event.into());
    fields.insert(key.into(), subject.clone());
    fields.insert(
        "sent_at".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    fields.insert("delivery_id".into(), delivery_id.to_string().into());
    let body = serde_json::to_vec(&serde_json::Value::Object(fields))
        .map_err(|e| NotifyError::Encode(e.to_string()))?;
    let signature = signature(secret.expose().as_bytes(), &body)?;
    let headers = vec![
        ("X-Countersign-Signature", signature),
        ("X-Countersign-Event", event.to_owned()),
        ("X-Countersign-Delivery", delivery_id.to_string()),
    ];
    Ok((body, headers))
}

/// The Slack body: `{"text": text}`.
pub(super) fn slack(text: &str) -> Result<Built, NotifyError> {
    let body = serde_json::to_vec(&serde_json::json!({ "text": text }))
        .map_err(|e| NotifyError::Encode(e.to_string()))?;
    Ok((body, Vec::new()))
}

/// One line for people: what happened, who asked, where, under which rule,
/// the statement (one line, at most [`SLACK_STATEMENT_CHARS`] characters) and
/// the console link; for a decision, who took it.
pub fn slack_text(event: Event, r: &ReviewView) -> String {
    let headline = match event {
        Event::Opened => {
            let s = if r.approvals_required == 1 { "" } else { "s" };
            format!(
                "Review requested by {} on {} (rule {}, {} approval{s} needed)",
                escape(&r.requester),
                escape(&r.resource),
                escape(&r.rule),
                r.approvals_required,
            )
        }
        Event::Approved | Event::Denied => {
            let (verb, verdict) = if event == Event::Approved {
                ("approved", "approve")
            } else {
                ("denied", "deny")
            };
            let deciders: Vec<&str> = r
                .decisions
                .iter()
                .filter(|d| d.decision == verdict)
                .map(|d| d.approver.as_str())
                .collect();
            format!(
                "Review {verb} by {} for {} on {} (rule {})",
                escape(&deciders.join(", ")),
                escape(&r.requester),
                escape(&r.resource),
                escape(&r.rule),
            )
        }
        Event::Expired => {
            let approvals = r
                .decisions
                .iter()
                .filter(|d| d.decision == "approve")
                .count();
            format!(
                "Review expired with {approvals} of {} approvals for {} on {} (rule {})",
                r.approvals_required,
                escape(&r.requester),
                escape(&r.resource),
                escape(&r.rule),
            )
        }
    };
    format!(
        "{headline}: {} <{}|open in console>",
        escape(&one_line(&r.statement, SLACK_STATEMENT_CHARS)),
        r.url
    )
}

/// `s` with each run of whitespace made one space, cut to `max` characters
/// (then ending in `…`).
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let mut chars = s
        .split_whitespace()
        .flat_map(|w| std::iter::once(' ').chain(w.chars()))
        .skip(1);
    let mut out: String = chars.by_ref().take(max).collect();
    if chars.next().is_some() {
        out.push('…');
    }
    out
}

/// Slack's three control characters, so that text never turns into a link
/// or a mention (`<!channel>`).
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
