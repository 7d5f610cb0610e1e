//! SSO state in the store, on PostgreSQL and SQLite: pending logins are used
//! once and expire, subjects bind to one identity, console sessions end, and
//! CLI codes are single use.

#![cfg(test)]

#[path = "support/backends.rs"]
mod backends;

use backends::Backend;
use chrono::{Duration, Utc};
use countersign_control_plane::StoreError;
use countersign_control_plane::store::identities::IdentityKind;
use countersign_control_plane::store::sso::{CliLogin, PendingLogin, TakenLogin};

fn pending(state_hash: &str, cli: Option<CliLogin>, ttl: Duration) -> PendingLogin {
    let now = Utc::now();
    PendingLogin {
        state_hash: state_hash.to_owned(),
        nonce: "n".repeat(22),
        pkce_verifier: "v".repeat(43),
        browser_hash: "b".repeat(64),
        return_to: Some("/reviews/r1".to_owned()),
        cli,
        created_at: now,
        expires_at: now + ttl,
    }
}

#[tokio::test]
async fn pending_logins_are_single_use_and_expire() {
    for (backend, store) in Backend::stores("cs_sso_store").await {
        let who = backend.name();
        let cli = CliLogin {
            redirect: "http://127.0.0.1:4000/callback".to_owned(),
            challenge: "c".repeat(43),
        };
        let fresh = pending("s1", Some(cli), Duration::minutes(10));
        store.insert_pending_login(&fresh).await.unwrap();
        let now = Utc::now();
        match store.take_pending_login("s1", now).await.unwrap() {
            TakenLogin::Fresh(got) => {
                assert_eq!(got.nonce, fresh.nonce, "{who}");
                assert_eq!(got.pkce_verifier, fresh.pkce_verifier, "{who}");
                assert_eq!(got.cli, fresh.cli, "{who}");
                assert_eq!(got.browser_hash, fresh.browser_hash, "{who}");
                assert_eq!(got.return_to, fresh.return_to, "{who}");
            }
            other => panic!("{who}: {other:?}"),
        }
        assert_eq!(
            store.take_pending_login("s1", now).await.unwrap(),
            TakenLogin::Replayed,
            "{who}"
        );
        assert_eq!(
            store.take_pending_login("never", now).await.unwrap(),
            TakenLogin::Unknown,
            "{who}"
        );
        store
            .insert_pending_login(&pending("s2", None, Duration::seconds(-1)))
            .await
            .unwrap();
        assert_eq!(
            store.take_pending_login("s2", now).await.unwrap(),
            TakenLogin::Expired,
            "{who}"
        );
        // Purging keeps recent leftovers (a replay is still told apart) and drops old ones.
        store
            .purge_sso_leftovers(now - Duration::days(1))
            .await
            .unwrap();
        assert_eq!(
            store.take_pending_login("s2", now).await.unwrap(),
            TakenLogin::Replayed,
            "{who}"
        );
        store
            .purge_sso_leftovers(now + Duration::minutes(11))
            .await
            .unwrap();
        assert_eq!(
            store.take_pending_login("s1", now).await.unwrap(),
            TakenLogin::Unknown,
            "{who}"
        );
    }
}

#[tokio::test]
async fn subjects_sessions_and_cli_codes() {
    for (backend, store) in Backend::stores("cs_sso_store").await {
        let who = backend.name();
        let alice = store
            .create_identity("alice@example.com", IdentityKind::User, None, &[])
            .await
            .unwrap();
        let bob = store
            .create_identity("bob@example.com", IdentityKind::User, None, &[])
            .await
            .unwrap();
        let iss = "https://idp.example.com";
        store
            .bind_oidc_subject(iss, "sub-a", &alice.id)
            .await
            .unwrap();
        assert_eq!(
            store.oidc_subject_identity(iss, "sub-a").await.unwrap(),
            Some(alice.id.clone()),
            "{who}"
        );
        // Another subject cannot take alice, and sub-a cannot become bob.
        for (sub, id) in [("sub-x", &alice.id), ("sub-a", &bob.id)] {
            assert!(
                matches!(
                    store.bind_oidc_subject(iss, sub, id).await,
                    Err(StoreError::Conflict { .. })
                ),
                "{who}: {sub}"
            );
        }
        // The same subject at another issuer is someone else.
        assert_eq!(
            store
                .oidc_subject_identity("https://other.example.com", "sub-a")
                .await
                .unwrap(),
            None,
            "{who}"
        );

        let now = Utc::now();
        store
            .insert_console_session("h1", &alice.id, "csrf", now, now + Duration::hours(8))
            .await
            .unwrap();
        let s = store.console_session("h1").await.unwrap().unwrap();
        assert_eq!(
            (s.identity_id.as_str(), s.csrf_token.as_str()),
            (alice.id.as_str(), "csrf")
        );
        assert!(s.ended_at.is_none(), "{who}");
        assert!(store.end_console_session("h1", now).await.unwrap(), "{who}");
        assert!(
            !store.end_console_session("h1", now).await.unwrap(),
            "{who}"
        );
        assert!(
            store
                .console_session("h1")
                .await
                .unwrap()
                .unwrap()
                .ended_at
                .is_some(),
            "{who}"
        );

        store
            .insert_cli_login_code("c1", &alice.id, "chal", now, now + Duration::minutes(2))
            .await
            .unwrap();
        assert_eq!(
            store.take_cli_login_code("c1", now).await.unwrap(),
            Some((alice.id.clone(), "chal".to_owned())),
            "{who}"
        );
        assert_eq!(
            store.take_cli_login_code("c1", now).await.unwrap(),
            None,
            "{who}"
        );
        store
            .insert_cli_login_code("c2", &alice.id, "chal", now, now - Duration::seconds(1))
            .await
            .unwrap();
        assert_eq!(
            store.take_cli_login_code("c2", now).await.unwrap(),
            None,
            "{who}"
        );
    }
}
