//! ID token checks against real ID tokens from a real OpenID provider (npm
//! `oidc-provider`, see tests/oidc/provider.mjs): the test plays a client of
//! two providers, then hands their tokens to the control plane's provider
//! checks, which trust only the first.

#![cfg(test)]

use countersign_common::Secret;
use countersign_control_plane::sso::provider::Provider;
use countersign_control_plane::sso::{OidcSettings, s256_challenge};
use countersign_testkit::oidc_provider::{Browser, ClientSpec, OidcProvider, User};
use std::collections::BTreeMap;
use std::time::Duration;

const CLIENT_ID: &str = "countersign";
const CLIENT_SECRET: &str = "provider-test-secret-0123456789";
const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn client() -> ClientSpec {
    ClientSpec {
        client_id: CLIENT_ID.to_owned(),
        client_secret: CLIENT_SECRET.to_owned(),
        redirect_uris: vec![REDIRECT.to_owned()],
    }
}

fn users() -> BTreeMap<String, User> {
    BTreeMap::from([(
        "alice".to_owned(),
        User {
            email: "alice@example.com".to_owned(),
            groups: vec!["eng".to_owned()],
        },
    )])
}

async fn start(skew: u64) -> OidcProvider {
    let _ = rustls::crypto::ring::default_provider().install_default();
    OidcProvider::start(&[client()], &users(), skew)
        .await
        .unwrap()
}

/// Signs in as alice at `idp` as the client would, and returns the ID token.
async fn id_token(idp: &OidcProvider, nonce: &str) -> String {
    let verifier = "v".repeat(43);
    let mut url = reqwest::Url::parse(&format!("{}/auth", idp.issuer)).unwrap();
    url.query_pairs_mut()
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("scope", "openid email groups")
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("state", "test-state")
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &s256_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let mut browser = Browser::new().unwrap();
    let callback = browser
        .sign_in(url.as_str(), "alice", REDIRECT)
        .await
        .unwrap();
    let code = reqwest::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer))
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["id_token"].as_str().unwrap().to_owned()
}

async fn relying_party(idp: &OidcProvider, client_id: &str) -> Provider {
    Provider::discover(OidcSettings {
        issuer_url: idp.issuer.clone(),
        client_id: client_id.to_owned(),
        client_secret: Secret::new(CLIENT_SECRET.to_owned()),
        redirect_url: REDIRECT.to_owned(),
        scopes: vec!["email".to_owned(), "groups".to_owned()],
        groups_claim: "groups".to_owned(),
        group_map: BTreeMap::new(),
        allowed_domains: Vec::new(),
        session_ttl: Duration::from_secs(3600),
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn id_tokens_are_checked_for_issuer_audience_nonce_and_expiry() {
    let ours = start(0).await;
    let theirs = start(0).await;
    let rp = relying_party(&ours, CLIENT_ID).await;

    // Ours, for this nonce: accepted, with its claims.
    let token = id_token(&ours, "nonce-1").await;
    let login = rp.verify_id_token(&token, "nonce-1").await.unwrap();
    assert_eq!(login.issuer, ours.issuer);
    assert_eq!(login.subject, "alice");
    assert_eq!(login.email.as_deref(), Some("alice@example.com"));
    assert_eq!(login.groups, Some(serde_json::json!(["eng"])));

    // Ours, for another request's nonce.
    let refusal = rp.verify_id_token(&token, "nonce-2").await.unwrap_err();
    assert_eq!(refusal.reason, "nonce_mismatch");

    // Another issuer's token. Both test providers sign with the package's
    // development keys, so only the issuer check can tell them apart.
    let foreign = id_token(&theirs, "nonce-1").await;
    let refusal = rp.verify_id_token(&foreign, "nonce-1").await.unwrap_err();
    assert_eq!(refusal.reason, "wrong_issuer", "{refusal:?}");

    // Ours, but for another client.
    let other_client = relying_party(&ours, "another-client").await;
    let refusal = other_client
        .verify_id_token(&token, "nonce-1")
        .await
        .unwrap_err();
    assert_eq!(refusal.reason, "wrong_audience", "{refusal:?}");

    // Tampered: the signature no longer verifies.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let first = if parts[2].starts_with('A') { 'B' } else { 'A' };
    parts[2] = format!("{first}{}", &parts[2][1..]);
    let refusal = rp
        .verify_id_token(&parts.join("."), "nonce-1")
        .await
        .unwrap_err();
    assert!(
        ["bad_signature", "id_token_invalid"].contains(&refusal.reason),
        "{refusal:?}"
    );

    // Not a token at all.
    let refusal = rp.verify_id_token("garbage", "nonce-1").await.unwrap_err();
    assert_eq!(refusal.reason, "id_token_invalid");
}

#[tokio::test]
async fn expired_id_tokens_are_refused() {
    // This provider's token endpoint runs two hours behind.
    let late = start(7200).await;
    let rp = relying_party(&late, CLIENT_ID).await;
    let token = id_token(&late, "n").await;
    let refusal = rp.verify_id_token(&token, "n").await.unwrap_err();
    assert_eq!(refusal.reason, "id_token_expired", "{refusal:?}");
}
