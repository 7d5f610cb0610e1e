//! Review notifications: a signed webhook and Slack, delivered to local
//! receivers on 127.0.0.1:0 that record every request.
//!
//! These run on SQLite only: notifications are sent from the service after
//! the store has committed, from the review as the store returns it, so the
//! backend makes no difference here (tests/reviews.rs covers the review rules
//! on both PostgreSQL and SQLite).

#![cfg(test)]

#[path = "support/receiver.rs"]
mod receiver;

use countersign_common::Secret;
use countersign_control_plane::notify::{self, Event, NotificationTarget};
use countersign_control_plane::reviews::{DecisionView, NewReview, ReviewView};
use countersign_control_plane::service::Principal;
use countersign_control_plane::store::identities::IdentityKind;
use countersign_control_plane::{ControlPlane, ServiceError, Settings, Store};
use hmac::{Hmac, Mac};
use receiver::{Receiver, Recorded};
use serde_json::Value;
use sha2::Sha256;

use std::time::{Duration, Instant};

const SECRET: &str = "webhook-secret-for-tests";
const REQUESTER: &str = "alice@example.com";
const MINUTE: Duration = Duration::from_secs(60);

fn webhook(url: String) -> NotificationTarget {
    NotificationTarget::Webhook {
        url,
        secret: Secret::new(SECRET.to_owned()),
    }
}

/// Settings for a control plane that notifies `targets`.
fn settings(targets: Vec<NotificationTarget>) -> Settings {
    let mut settings = Settings::new(Secret::new("a".repeat(32)), Secret::new("g".repeat(32)));
    settings.public_url = "https://console.example.com".to_owned();
    settings.notifications = targets;
    settings
}

/// A control plane on a fresh SQLite file (kept alive by the returned dir).
async fn control_plane(
    targets: Vec<NotificationTarget>,
) -> Result<(ControlPlane, tempfile::TempDir), ServiceError> {
    // The binary installs ring at start; tests do it here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("cs.db").display());
    let store = Store::connect(&url).await.unwrap();
    let cp = ControlPlane::new(store, settings(targets)).await?;
    Ok((cp, dir))
}

/// Creates a person in `groups` and returns them as a principal.
async fn person(cp: &ControlPlane, email: &str, groups: &[&str]) -> Principal {
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    cp.store()
        .create_identity(email, IdentityKind::User, None, &groups)
        .await
        .unwrap();
    let token = cp
        .issue_token(email, &[], None, "test")
        .await
        .unwrap()
        .token;
    cp.principal(&token).await.unwrap()
}

async fn approver(cp: &ControlPlane, email: &str) -> Principal {
    person(cp, email, &["countersign-approvers"]).await
}

fn new_review(approvals_required: u32, timeout: Duration) -> NewReview {
    NewReview {
        session_id: "0190f000-0000-7000-8000-000000000001".to_owned(),
        requester: REQUESTER.to_owned(),
        resource: "pg-prod".to_owned(),
        statement: "DELETE FROM orders WHERE id = 42".to_owned(),
        kinds: vec!["delete".to_owned()],
        rule: "deletes-need-review".to_owned(),
        message: None,
        approvals_required,
        approvers: Vec::new(),
        timeout,
        max_approval_minutes: 0,
    }
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks one webhook delivery: headers, signature, body shape; returns the body.
fn check_webhook(req: &Recorded, event: &str, review_id: &str, status: &str) -> Value {
    assert_eq!(req.path, "/hook");
    assert_eq!(req.header("content-type"), "application/json");
    assert_eq!(req.header("x-countersign-event"), event);
    let signature = req.header("x-countersign-signature");
    assert_eq!(
        signature,
        hmac_hex(SECRET, &req.body),
        "signature over the exact body"
    );
    assert_ne!(
        signature,
        hmac_hex("another-secret-of-16+", &req.body),
        "a wrong secret must not verify"
    );
    let body = req.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{body}");
    assert_eq!(body["event"], event);
    assert_eq!(body["delivery_id"], req.header("x-countersign-delivery"));
    uuid::Uuid::parse_str(req.header("x-countersign-delivery")).unwrap();
    chrono::DateTime::parse_from_rfc3339(body["sent_at"].as_str().unwrap()).unwrap();
    let review = &body["review"];
    assert_eq!(review["id"], review_id);
    assert_eq!(review["status"], status);
    assert_eq!(review["requester"], REQUESTER);
    assert_eq!(
        review["url"],
        format!("https://console.example.com/reviews/{review_id}")
    );
    body
}

fn slack_text(req: &Recorded) -> String {
    let body = req.json();
    assert_eq!(body.as_object().unwrap().len(), 1, "only text: {body}");
    body["text"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn opened_and_approved_reach_the_webhook_signed_and_slack() {
    let hook = Receiver::start(&[]).await;
    let slack = Receiver::start(&[]).await;
    let (cp, _dir) = control_plane(vec![
        webhook(hook.url("/hook")),
        NotificationTarget::Slack {
            url: slack.url("/services/T0/B0/slack-credential"),
        },
    ])
    .await
    .unwrap();
    let bob = approver(&cp, "bob@example.com").await;

    let opened = cp.open_review(new_review(1, MINUTE)).await.unwrap();
    let id = opened.id.clone();
    let approved = cp
        .decide_review(&id, &bob, true, Some("fine".into()))
        .await
        .unwrap();
    assert_eq!(approved.status, "approved");

    let got = hook.wait_for(2).await;
    check_webhook(&got[0], "review.opened", &id, "pending");
    let body = check_webhook(&got[1], "review.approved", &id, "approved");
    assert_eq!(
        body["review"]["decisions"][0]["approver"],
        "bob@example.com"
    );
    assert_eq!(
        body["review"]["statement"],
        "DELETE FROM orders WHERE id = 42"
    );
    assert_ne!(
        got[0].header("x-countersign-delivery"),
        got[1].header("x-countersign-delivery")
    );
    // The library's signature is the one a receiver recomputes.
    assert_eq!(
        notify::signature(SECRET.as_bytes(), &got[1].body).unwrap(),
        got[1].header("x-countersign-signature")
    );

    let msgs = slack.wait_for(2).await;
    let url = format!("https://console.example.com/reviews/{id}");
    let (first, second) = (slack_text(&msgs[0]), slack_text(&msgs[1]));
    for text in [&first, &second] {
        assert!(text.contains(REQUESTER), "{text}");
        assert!(text.contains(&url), "{text}");
        assert!(
            text.contains("pg-prod") && text.contains("deletes-need-review"),
            "{text}"
        );
        assert!(text.contains("DELETE FROM orders WHERE id = 42"), "{text}");
        assert!(!text.contains('\n'), "one line: {text}");
    }
    assert!(
        first.starts_with("Review requested by alice@example.com"),
        "{first}"
    );
    assert!(
        second.starts_with("Review approved by bob@example.com"),
        "{second}"
    );
    assert!(
        msgs.iter()
            .all(|m| m.header("x-countersign-signature").is_empty())
    );
    assert_eq!(msgs[0].path, "/services/T0/B0/slack-credential");

    // Nothing more comes: one event, one delivery.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.requests().len(), 2);
    assert_eq!(slack.requests().len(), 2);
}

#[tokio::test]
async fn partial_approvals_are_silent_denials_and_expiry_are_sent() {
    let hook = Receiver::start(&[]).await;
    let (cp, _dir) = control_plane(vec![webhook(hook.url("/hook"))])
        .await
        .unwrap();
    let bob = approver(&cp, "bob@example.com").await;
    let carol = approver(&cp, "carol@example.com").await;

    // Two approvals needed: the first leaves it pending (no event), a denial closes it.
    let a = cp.open_review(new_review(2, MINUTE)).await.unwrap();
    let pending = cp.decide_review(&a.id, &bob, true, None).await.unwrap();
    assert_eq!(pending.status, "pending");
    cp.decide_review(&a.id, &carol, false, Some("not today".into()))
        .await
        .unwrap();

    // Expiry is announced when it is noticed, here by reading the review.
    let b = cp
        .open_review(new_review(1, Duration::from_secs(1)))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(cp.review(&b.id).await.unwrap().unwrap().status, "expired");
    // Reading it again changes nothing and announces nothing.
    cp.review(&b.id).await.unwrap();

    let got = hook.wait_for(4).await;
    check_webhook(&got[0], "review.opened", &a.id, "pending");
    let denied = check_webhook(&got[1], "review.denied", &a.id, "denied");
    assert_eq!(
        denied["review"]["decisions"][1]["approver"],
        "carol@example.com"
    );
    assert_eq!(denied["review"]["decisions"][1]["comment"], "not today");
    check_webhook(&got[2], "review.opened", &b.id, "pending");
    check_webhook(&got[3], "review.expired", &b.id, "expired");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(hook.requests().len(), 4);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_until_delivered() {
    let hook = Receiver::start(&[503, 503]).await;
    let (cp, _dir) = control_plane(vec![webhook(hook.url("/hook"))])
        .await
        .unwrap();
    let opened = cp.open_review(new_review(1, MINUTE)).await.unwrap();

    let got = hook.wait_for(3).await;
    // The third attempt succeeded: no fourth comes (the next would be 2 s later).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(hook.requests().len(), 3, "exactly 3 attempts");
    for req in &got {
        check_webhook(req, "review.opened", &opened.id, "pending");
        // A retry is the same delivery: same bytes, id and signature.
        assert_eq!(req.body, got[0].body);
        assert_eq!(
            req.header("x-countersign-delivery"),
            got[0].header("x-countersign-delivery")
        );
    }
    let gaps = [got[1].at - got[0].at, got[2].at - got[1].at];
    assert!(gaps[0] >= Duration::from_millis(450), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(950), "{gaps:?}");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let hook = Receiver::start(&[400]).await;
    let (cp, _dir) = control_plane(vec![webhook(hook.url("/hook"))])
        .await
        .unwrap();
    let bob = approver(&cp, "bob@example.com").await;
    let opened = cp.open_review(new_review(1, MINUTE)).await.unwrap();
    hook.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(hook.requests().len(), 1, "a 400 is final");

    // The target's queue goes on with the next event.
    cp.decide_review(&opened.id, &bob, true, None)
        .await
        .unwrap();
    let got = hook.wait_for(2).await;
    check_webhook(&got[1], "review.approved", &opened.id, "approved");
}

#[tokio::test]
async fn network_errors_are_retried() {
    // A port with nobody listening yet: the first attempts are refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (cp, _dir) = control_plane(vec![webhook(format!("http://{addr}/hook"))])
        .await
        .unwrap();
    let opened = cp.open_review(new_review(1, MINUTE)).await.unwrap();
    // Attempts go at about 0 s, 0.5 s and 1.5 s: start listening between the
    // second and the third.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let hook = Receiver::serve(listener, &[], Duration::ZERO);
    let got = hook.wait_for(1).await;
    check_webhook(&got[0], "review.opened", &opened.id, "pending");
}

#[tokio::test]
async fn a_slow_target_never_holds_up_the_request() {
    let hook = Receiver::start_with(&[], Duration::from_secs(5)).await;
    let (cp, _dir) = control_plane(vec![webhook(hook.url("/hook"))])
        .await
        .unwrap();
    let bob = approver(&cp, "bob@example.com").await;
    let started = Instant::now();
    let opened = cp.open_review(new_review(1, MINUTE)).await.unwrap();
    cp.decide_review(&opened.id, &bob, true, None)
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The first delivery is under way meanwhile.
    hook.wait_for(1).await;
}

#[tokio::test]
async fn bad_targets_are_refused_and_never_print() {
    let short = NotificationTarget::Webhook {
        url: "https://hooks.example.com/x".into(),
        secret: Secret::new("short".into()),
    };
    let ftp = NotificationTarget::Slack {
        url: "ftp://hooks.example.com/x".into(),
    };
    for target in [short, ftp] {
        let err = control_plane(vec![target]).await.unwrap_err();
        assert!(matches!(err, ServiceError::Invalid(_)), "{err}");
    }

    let printed = format!(
        "{:?}",
        settings(vec![
            webhook("https://hooks.example.com/private-path".into()),
            NotificationTarget::Slack {
                url: "https://hooks.slack.com/services/T0/B0/slack-credential".into(),
            },
        ])
    );
    for leak in [SECRET, "private-path", "slack-credential"] {
        assert!(!printed.contains(leak), "{leak} in {printed}");
    }
    assert!(printed.contains("https://hooks.slack.com/"), "{printed}");
}

#[test]
fn signature_is_hmac_sha256_hex() {
    // RFC 4231, test case 2.
    assert_eq!(
        notify::signature(b"Jefe", b"what do ya want for nothing?").unwrap(),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_ne!(
        notify::signature(b"Jeff", b"what do ya want for nothing?").unwrap(),
        notify::signature(b"Jefe", b"what do ya want for nothing?").unwrap()
    );
}

#[test]
fn only_server_errors_and_rate_limits_are_retried() {
    use reqwest::StatusCode as S;
    for s in [
        S::INTERNAL_SERVER_ERROR,
        S::BAD_GATEWAY,
        S::SERVICE_UNAVAILABLE,
        S::TOO_MANY_REQUESTS,
    ] {
        assert!(notify::retryable(s), "{s}");
    }
    for s in [
        S::BAD_REQUEST,
        S::UNAUTHORIZED,
        S::FORBIDDEN,
        S::NOT_FOUND,
        S::GONE,
        S::MOVED_PERMANENTLY,
    ] {
        assert!(!notify::retryable(s), "{s}");
    }
}

fn view(statement: &str, status: &str, decisions: &[(&str, &str)]) -> ReviewView {
    let now = chrono::Utc::now();
    ReviewView {
        id: "r1".into(),
        session_id: "s1".into(),
        requester: REQUESTER.into(),
        resource: "pg-prod".into(),
        statement: statement.into(),
        kinds: vec!["delete".into()],
        rule: "deletes-need-review".into(),
        message: None,
        status: status.into(),
        approvals_required: 2,
        max_approval_minutes: 0,
        approvers: vec!["group:countersign-approvers".into()],
        decisions: decisions
            .iter()
            .map(|(who, d)| DecisionView {
                approver: (*who).into(),
                decision: (*d).into(),
                comment: None,
                at: now,
                scope_minutes: None,
            })
            .collect(),
        created_at: now,
        expires_at: now,
        url: "https://console.example.com/reviews/r1".into(),
    }
}

#[test]
fn slack_text_is_one_escaped_line_with_the_statement_cut() {
    let long = format!(
        "SELECT '<!channel>' & 1\n\n  FROM t WHERE {}",
        "x = 1 AND ".repeat(50)
    );
    let text = notify::slack_text(Event::Opened, &view(&long, "pending", &[]));
    assert!(
        !text.contains('\n') && !text.contains("<!channel>"),
        "{text}"
    );
    assert!(
        text.contains("SELECT '&lt;!channel&gt;' &amp; 1 FROM t WHERE x = 1"),
        "{text}"
    );
    assert!(text.contains("2 approvals needed"), "{text}");
    assert!(
        text.ends_with("… <https://console.example.com/reviews/r1|open in console>"),
        "{text}"
    );
    // 200 characters of statement (before escaping), then the ellipsis.
    let shown = text.split(": ").nth(1).unwrap().split('…').next().unwrap();
    let unescaped = shown
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    assert_eq!(unescaped.chars().count(), notify::SLACK_STATEMENT_CHARS);

    let short = "DELETE FROM orders WHERE id = 42";
    let denied = notify::slack_text(
        Event::Denied,
        &view(
            short,
            "denied",
            &[
                ("bob@example.com", "approve"),
                ("carol@example.com", "deny"),
            ],
        ),
    );
    assert!(
        denied.starts_with("Review denied by carol@example.com for alice@example.com on pg-prod"),
        "{denied}"
    );
    assert!(
        denied.contains(": DELETE FROM orders WHERE id = 42 <"),
        "{denied}"
    );
    let expired = notify::slack_text(
        Event::Expired,
        &view(short, "expired", &[("bob@example.com", "approve")]),
    );
    assert!(
        expired.starts_with("Review expired with 1 of 2 approvals for alice@example.com"),
        "{expired}"
    );
}
