//! Single sign-on end to end: `countersign control-plane` (PostgreSQL store)
//! signing people in through a real OpenID provider (the npm package
//! `oidc-provider`, see tests/oidc/provider.mjs), driven by a scripted
//! browser; and `countersign login` through its loopback redirect.

#![cfg(test)]

use anyhow::{Context, Result, bail, ensure};
use countersign_testkit::oidc_provider::{Browser, ClientSpec, OidcProvider, User};
use countersign_testkit::{TestDb, ensure_services, eventually, free_port};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");
const ADMIN: &str = "sso-admin-token-0123456789abcdef012345";
const GATEWAY: &str = "sso-gateway-token-0123456789abcdef0123";
const CLIENT_ID: &str = "countersign";
const CLIENT_SECRET: &str = "sso-client-secret-0123456789";

/// The provider's people; `alice_groups` are alice's groups there.
fn users_with(alice_groups: &[&str]) -> BTreeMap<String, User> {
    let user = |email: &str, groups: &[&str]| User {
        email: email.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    };
    BTreeMap::from([
        ("alice".to_owned(), user("alice@example.com", alice_groups)),
        (
            "mallory".to_owned(),
            user("mallory@elsewhere.test", &["eng"]),
        ),
    ])
}

fn users() -> BTreeMap<String, User> {
    users_with(&["eng", "unmapped-team"])
}

/// A control plane with `[oidc]` pointing at its own provider.
struct Sso {
    server: String,
    provider: OidcProvider,
    dir: tempfile::TempDir,
    _db: TestDb,
    _cp: Child,
}

impl Sso {
    async fn start(clock_skew_seconds: u64) -> Result<Sso> {
        ensure_services()?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let db = TestDb::create("cs_sso").await?;
        let dir = tempfile::tempdir()?;
        let (http, grpc) = (free_port()?, free_port()?);
        let server = format!("http://127.0.0.1:{http}");
        let provider =
            OidcProvider::start(&[client(&server)], &users(), clock_skew_seconds).await?;
        let config = dir.path().join("control-plane.toml");
        std::fs::write(
            &config,
            format!(
                "http_addr = \"127.0.0.1:{http}\"\ngrpc_addr = \"127.0.0.1:{grpc}\"\n\
                 database_url = \"{}\"\nadmin_token = \"{ADMIN}\"\ngateway_token = \"{GATEWAY}\"\n\n\
                 [oidc]\nissuer_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
                 client_secret = \"overridden-by-the-environment\"\n\
                 scopes = [\"email\", \"profile\", \"groups\"]\n\
                 allowed_domains = [\"example.com\"]\n\
                 group_map = {{ \"eng\" = \"engineers\", \"dba-team\" = \"dba\" }}\n",
                db.url(),
                provider.issuer
            ),
        )?;
        // SSO_TEST_LOG=FILE keeps the control plane's log for debugging.
        let log = match std::env::var_os("SSO_TEST_LOG") {
            Some(p) => std::path::PathBuf::from(p),
            None => dir.path().join("cp.log"),
        };
        let cp = Command::new(BIN)
            .args(["control-plane", "--config"])
            .arg(&config)
            .env("COUNTERSIGN_OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()?;
        eventually(Duration::from_secs(60), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", http))
                .await
                .map(|_| ())
                .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())
        })
        .await?;
        Ok(Sso {
            server,
            provider,
            dir,
            _db: db,
            _cp: cp,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// Starts a browser login and signs in as `login`; returns the callback
    /// URL the provider sent the browser to (not yet requested).
    async fn sign_in(&self, browser: &mut Browser, login: &str) -> Result<String> {
        let start = self.login_url(browser).await?;
        browser
            .sign_in(&start, login, &self.url("/auth/callback"))
            .await
    }

    /// The provider URL `GET /auth/login` redirects to.
    async fn login_url(&self, browser: &mut Browser) -> Result<String> {
        let resp = browser.get(&self.url("/auth/login")).await?;
        ensure!(resp.status() == 303, "login answered {}", resp.status());
        location(&resp)
    }

    async fn admin_get(&self, path: &str) -> Result<Value> {
        let resp = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(ADMIN)
            .send()
            .await?;
        ensure!(resp.status().is_success(), "{path}: {}", resp.status());
        Ok(resp.json().await?)
    }

    async fn groups_of(&self, email: &str) -> Result<Vec<String>> {
        let list = self.admin_get("/api/v1/identities").await?;
        let identities = list["identities"]
            .as_array()
            .or(list.as_array())
            .context("identity list")?
            .clone();
        let found = identities
            .iter()
            .find(|i| i["email"] == email)
            .with_context(|| format!("{email} not in {list}"))?;
        Ok(serde_json::from_value(found["groups"].clone())?)
    }

    /// `auth` audit events whose `action` is `action`.
    async fn auth_events(&self, action: &str) -> Result<Vec<Value>> {
        let page = self.admin_get("/api/v1/audit?limit=1000").await?;
        Ok(page["events"]
            .as_array()
            .context("audit page")?
            .iter()
            .filter(|e| e["event"] == "auth" && e["detail"]["action"] == action)
            .cloned()
            .collect())
    }

    /// Fails unless a refusal with `reason` is in the audit.
    async fn ensure_refusal_audited(&self, reason: &str) -> Result<()> {
        let refused = self.auth_events("refused").await?;
        ensure!(
            refused.iter().any(|e| e["detail"]["reason"] == reason),
            "no audited refusal {reason:?} in {refused:#?}"
        );
        Ok(())
    }
}

fn client(server: &str) -> ClientSpec {
    ClientSpec {
        client_id: CLIENT_ID.to_owned(),
        client_secret: CLIENT_SECRET.to_owned(),
        redirect_uris: vec![format!("{server}/auth/callback")],
    }
}

/// `resp` if it is a 303, else an error with its body.
async fn expect_redirect(resp: reqwest::Response) -> Result<reqwest::Response> {
    if resp.status() == 303 {
        return Ok(resp);
    }
    bail!(
        "expected 303, got {}: {}",
        resp.status(),
        resp.text().await?
    )
}

fn location(resp: &reqwest::Response) -> Result<String> {
    Ok(resp
        .headers()
        .get(reqwest::header::LOCATION)
        .context("no Location")?
        .to_str()?
        .to_owned())
}

/// The Set-Cookie header of cookie `name`.
fn set_cookie(resp: &reqwest::Response, name: &str) -> Result<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
        .with_context(|| format!("no Set-Cookie for {name}"))
}

/// Fails unless a Set-Cookie header is Secure, HttpOnly, SameSite=Lax,
/// `Path=/` and has no Domain (what the `__Host-` prefix needs, and more).
fn ensure_host_cookie(header: &str) -> Result<()> {
    let attrs: Vec<&str> = header.split(';').map(str::trim).collect();
    ensure!(attrs[0].starts_with("__Host-"), "{header}");
    for want in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        ensure!(attrs.contains(&want), "{want} missing from {header}");
    }
    ensure!(
        !attrs
            .iter()
            .any(|a| a.to_ascii_lowercase().starts_with("domain")),
        "{header}"
    );
    Ok(())
}

/// Replaces query parameter `name` of `url` with `value`.
fn with_param(url: &str, name: &str, value: &str) -> Result<String> {
    let mut parsed = reqwest::Url::parse(url)?;
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == name {
                value.to_owned()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(pairs);
    Ok(parsed.to_string())
}

#[tokio::test]
async fn login_maps_groups_and_replaces_them_at_each_login() -> Result<()> {
    let sso = Sso::start(0).await?;
    let mut browser = Browser::new()?;
    let callback = sso.sign_in(&mut browser, "alice").await?;
    let resp = browser.get(&callback).await?;
    let resp = expect_redirect(resp).await?;
    ensure!(location(&resp)? == "/auth/session");

    // A console page to come back to, on this site only.
    let mut browser = Browser::new()?;
    let resp = browser
        .get(&sso.url("/auth/login?return_to=/reviews/r-1"))
        .await?;
    let callback = browser
        .sign_in(&location(&resp)?, "alice", &sso.url("/auth/callback"))
        .await?;
    let resp = expect_redirect(browser.get(&callback).await?).await?;
    assert_eq!(location(&resp)?, "/reviews/r-1");
    let resp = browser
        .get(&sso.url("/auth/login?return_to=//evil.example.com/"))
        .await?;
    assert_eq!(resp.status(), 400);

    // Only mapped groups count: `unmapped-team` gives nothing.
    assert_eq!(sso.groups_of("alice@example.com").await?, ["engineers"]);
    let logins = sso.auth_events("oidc_login").await?;
    ensure!(logins.len() == 2, "{logins:#?}");
    assert_eq!(logins[0]["identity"], "alice@example.com");
    assert_eq!(logins[0]["detail"]["subject"], "alice");

    // The provider now says alice is in dba-team only: her groups follow.
    sso.provider.set_users(&users_with(&["dba-team"]))?;
    let mut later = Browser::new()?;
    let callback = sso.sign_in(&mut later, "alice").await?;
    ensure!(later.get(&callback).await?.status() == 303);
    assert_eq!(sso.groups_of("alice@example.com").await?, ["dba"]);
    ensure!(sso.auth_events("oidc_login").await?.len() == 3);

    // A domain not allowed is refused after the provider vouched for it.
    let mut other = Browser::new()?;
    let callback = sso.sign_in(&mut other, "mallory").await?;
    let resp = other.get(&callback).await?;
    assert_eq!(resp.status(), 403);
    sso.ensure_refusal_audited("domain_not_allowed").await?;
    let refused = sso.auth_events("refused").await?;
    ensure!(
        refused
            .iter()
            .any(|e| e["identity"] == "mallory@elsewhere.test"
                && e["session_id"] == "auth:mallory@elsewhere.test"),
        "the refusal names who the provider vouched for: {refused:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn session_cookie_csrf_and_logout() -> Result<()> {
    let sso = Sso::start(0).await?;
    let mut browser = Browser::new()?;
    let resp = browser.get(&sso.url("/auth/login")).await?;
    ensure_host_cookie(&set_cookie(&resp, "__Host-countersign-login")?)?;
    let callback = browser
        .sign_in(&location(&resp)?, "alice", &sso.url("/auth/callback"))
        .await?;
    let resp = browser.get(&callback).await?;
    let resp = expect_redirect(resp).await?;
    let cookie = set_cookie(&resp, "__Host-countersign")?;
    ensure_host_cookie(&cookie)?;
    ensure!(cookie.len() > "__Host-countersign=".len() + 40, "{cookie}");
    // The login cookie (which ties the callback to this browser) is cleared.
    ensure!(set_cookie(&resp, "__Host-countersign-login")?.contains("Max-Age=0"));

    let session: Value = browser.get(&sso.url("/auth/session")).await?.json().await?;
    assert_eq!(session["identity"], "alice@example.com");
    let csrf = session["csrf_token"]
        .as_str()
        .context("csrf_token")?
        .to_owned();

    // GET on the API works with the cookie alone.
    let resp = browser.get(&sso.url("/api/v1/grants")).await?;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    // A POST needs the CSRF header: without it, or with a wrong one, 403.
    let grant = [("resource", "pg-prod")];
    for headers in [vec![], vec![("x-csrf-token", "not-the-token")]] {
        let resp = browser
            .send(
                reqwest::Method::POST,
                &sso.url("/api/v1/grants"),
                Some(&grant),
                &headers,
            )
            .await?;
        assert_eq!(resp.status(), 403, "{:?}", resp.text().await);
    }
    let resp = browser
        .send(
            reqwest::Method::POST,
            &sso.url("/api/v1/grants"),
            Some(&grant),
            &[("x-csrf-token", &csrf)],
        )
        .await?;
    // Past the CSRF check (the form body is no JSON grant request).
    ensure!(
        ![401, 403].contains(&resp.status().as_u16()),
        "{}",
        resp.status()
    );

    // Logout is a console form: without the token it is refused.
    let logout = sso.url("/auth/logout");
    let resp = browser
        .send(reqwest::Method::POST, &logout, Some(&[]), &[])
        .await?;
    assert_eq!(resp.status(), 403);
    let resp = browser
        .send(
            reqwest::Method::POST,
            &logout,
            Some(&[("csrf_token", "wrong")]),
            &[],
        )
        .await?;
    assert_eq!(resp.status(), 403);
    let session_cookie = browser
        .cookie(&sso.server, "__Host-countersign")
        .context("session cookie kept")?;
    let resp = browser
        .send(
            reqwest::Method::POST,
            &logout,
            Some(&[("csrf_token", &csrf)]),
            &[],
        )
        .await?;
    assert_eq!(resp.status(), 200);
    ensure!(set_cookie(&resp, "__Host-countersign")?.contains("Max-Age=0"));
    ensure!(!sso.auth_events("logout").await?.is_empty());

    // The sign-in routes are in the API document.
    let doc = sso.admin_get("/api/v1/openapi.json").await?;
    for path in [
        "/auth/login",
        "/auth/callback",
        "/auth/session",
        "/auth/logout",
        "/auth/cli/token",
    ] {
        ensure!(
            doc["paths"][path].is_object(),
            "{path} not in the OpenAPI document"
        );
    }

    // The old cookie value is dead, even if a browser kept it.
    let resp = reqwest::Client::new()
        .get(sso.url("/api/v1/grants"))
        .header("cookie", format!("__Host-countersign={session_cookie}"))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    let resp = reqwest::Client::new()
        .get(sso.url("/auth/session"))
        .header("cookie", format!("__Host-countersign={session_cookie}"))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    Ok(())
}

#[tokio::test]
async fn bad_callbacks_are_refused_with_4xx_and_audited() -> Result<()> {
    let sso = Sso::start(0).await?;

    // A state this control plane never issued.
    let resp = reqwest::Client::new()
        .get(sso.url("/auth/callback?state=forged-state&code=whatever"))
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    sso.ensure_refusal_audited("unknown_state").await?;

    // The person cancels at the provider: it answers with an error.
    let mut browser = Browser::new()?;
    let start = sso.login_url(&mut browser).await?;
    let callback = browser
        .cancel_sign_in(&start, &sso.url("/auth/callback"))
        .await?;
    ensure!(callback.contains("error=access_denied"), "{callback}");
    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), 401);
    sso.ensure_refusal_audited("provider_error").await?;

    // A callback URL carried to another browser (login CSRF: someone tricks
    // a victim into finishing *their* sign-in) is refused.
    let mut attacker = Browser::new()?;
    let callback = sso.sign_in(&mut attacker, "alice").await?;
    let resp = Browser::new()?.get(&callback).await?;
    assert_eq!(resp.status(), 400);
    sso.ensure_refusal_audited("browser_mismatch").await?;

    // The same callback twice: the second is a replay.
    let mut browser = Browser::new()?;
    let callback = sso.sign_in(&mut browser, "alice").await?;
    assert_eq!(browser.get(&callback).await?.status(), 303);
    let resp = Browser::new()?.get(&callback).await?;
    assert_eq!(resp.status(), 400);
    sso.ensure_refusal_audited("replayed_state").await?;

    // An ID token made for another authorization request: the nonce the
    // provider saw is not the one this login stored.
    let mut browser = Browser::new()?;
    let start = sso.login_url(&mut browser).await?;
    let tampered = with_param(&start, "nonce", "a-nonce-of-another-request")?;
    let callback = browser
        .sign_in(&tampered, "alice", &sso.url("/auth/callback"))
        .await?;
    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), 401);
    sso.ensure_refusal_audited("nonce_mismatch").await?;

    // A response from another issuer (a second provider with the same client
    // registration), delivered to this control plane's callback.
    let other = OidcProvider::start(&[client(&sso.server)], &users(), 0).await?;
    let mut browser = Browser::new()?;
    let start = sso.login_url(&mut browser).await?;
    let foreign = start.replacen(&sso.provider.issuer, &other.issuer, 1);
    ensure!(foreign != start);
    let callback = browser
        .sign_in(&foreign, "alice", &sso.url("/auth/callback"))
        .await?;
    ensure!(callback.contains("iss="), "{callback}");
    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), 401);
    sso.ensure_refusal_audited("wrong_issuer").await?;

    // The same without the response's `iss` (as from a provider that does
    // not send it): the other issuer's code is worth nothing at ours.
    let mut browser = Browser::new()?;
    let start = sso.login_url(&mut browser).await?;
    let foreign = start.replacen(&sso.provider.issuer, &other.issuer, 1);
    let callback = browser
        .sign_in(&foreign, "alice", &sso.url("/auth/callback"))
        .await?;
    let mut stripped = reqwest::Url::parse(&callback)?;
    let kept: Vec<(String, String)> = stripped
        .query_pairs()
        .filter(|(k, _)| k != "iss")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    stripped.query_pairs_mut().clear().extend_pairs(kept);
    let resp = browser.get(stripped.as_str()).await?;
    assert_eq!(resp.status(), 401);
    sso.ensure_refusal_audited("code_exchange_failed").await?;

    // None of these signed anyone in.
    ensure!(sso.auth_events("oidc_login").await?.len() == 1);
    Ok(())
}

#[tokio::test]
async fn expired_id_token_is_refused_and_audited() -> Result<()> {
    // The provider's token endpoint runs two hours behind: its ID tokens
    // (valid for one hour) have expired when they arrive.
    let sso = Sso::start(7200).await?;
    let mut browser = Browser::new()?;
    let callback = sso.sign_in(&mut browser, "alice").await?;
    let resp = browser.get(&callback).await?;
    assert_eq!(resp.status(), 401);
    sso.ensure_refusal_audited("id_token_expired").await?;
    ensure!(sso.auth_events("oidc_login").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn control_plane_refuses_to_start_when_discovery_fails() -> Result<()> {
    ensure_services()?;
    let db = TestDb::create("cs_sso_nodisc").await?;
    let dir = tempfile::tempdir()?;
    let (http, grpc, nothing) = (free_port()?, free_port()?, free_port()?);
    let config = dir.path().join("cp.toml");
    std::fs::write(
        &config,
        format!(
            "http_addr = \"127.0.0.1:{http}\"\ngrpc_addr = \"127.0.0.1:{grpc}\"\n\
             database_url = \"{}\"\nadmin_token = \"{ADMIN}\"\ngateway_token = \"{GATEWAY}\"\n\n\
             [oidc]\nissuer_url = \"http://127.0.0.1:{nothing}\"\nclient_id = \"x\"\nclient_secret = \"y\"\n",
            db.url()
        ),
    )?;
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(BIN)
            .args(["control-plane", "--config"])
            .arg(&config)
            .output(),
    )
    .await??;
    ensure!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.contains("OIDC discovery at") && stderr.contains(&format!("127.0.0.1:{nothing}")),
        "{stderr}"
    );
    Ok(())
}

#[tokio::test]
async fn cli_login_through_the_loopback_redirect() -> Result<()> {
    let sso = Sso::start(0).await?;
    let config_home = sso.dir.path().join("xdg");
    let mut login = Command::new(BIN)
        .args(["login", "--server", &sso.server, "--timeout", "2m"])
        .env("XDG_CONFIG_HOME", &config_home)
        .env_remove("COUNTERSIGN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = login.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let printed = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await??
            .context("countersign login exited before printing its URL")?;
        if let Some(url) = line
            .trim()
            .strip_prefix(&format!("{}/auth/login?", sso.server))
        {
            break format!("{}/auth/login?{url}", sso.server);
        }
    };
    ensure!(
        printed.contains("cli_redirect=http%3A%2F%2F127.0.0.1%3A"),
        "{printed}"
    );

    // Play the browser: through the provider, back to the control plane,
    // which sends us on to the CLI's loopback listener.
    let mut browser = Browser::new()?;
    let callback = browser
        .sign_in(&printed, "alice", &sso.url("/auth/callback"))
        .await?;
    let resp = browser.get(&callback).await?;
    let resp = expect_redirect(resp).await?;
    let loopback = location(&resp)?;
    ensure!(loopback.starts_with("http://127.0.0.1:"), "{loopback}");
    ensure!(
        browser.cookie(&sso.server, "__Host-countersign").is_none(),
        "a CLI login sets no console session"
    );
    let resp = browser.get(&loopback).await?;
    assert_eq!(resp.status(), 200);

    let status = tokio::time::timeout(Duration::from_secs(30), login.wait()).await??;
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await? {
        rest.push_str(&line);
        rest.push('\n');
    }
    ensure!(status.success(), "countersign login failed: {rest}");
    ensure!(rest.contains("Signed in as alice@example.com"), "{rest}");

    let file = config_home.join("countersign/credentials.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "credentials.toml mode {mode:o}");
    }
    let saved: toml::Table = toml::from_str(&std::fs::read_to_string(&file)?)?;
    let token = saved["servers"][&sso.server]["token"]
        .as_str()
        .context("saved token")?
        .to_owned();

    // The code was single use.
    let resp = reqwest::Client::new()
        .post(sso.url("/auth/cli/token"))
        .json(&serde_json::json!({
            "code": reqwest::Url::parse(&loopback)?
                .query_pairs()
                .find(|(k, _)| k == "code")
                .map(|(_, v)| v.into_owned())
                .context("code")?,
            "verifier": "a".repeat(43),
        }))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);
    sso.ensure_refusal_audited("unknown_cli_code").await?;

    // A later command uses the saved token when --token is absent.
    let out = Command::new(BIN)
        .args(["grant", "list", "--server", &sso.server, "--mine"])
        .env("XDG_CONFIG_HOME", &config_home)
        .env_remove("COUNTERSIGN_TOKEN")
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "grant list with the saved token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // And the token is alice's, with her mapped groups.
    let resp = reqwest::Client::new()
        .get(sso.url("/api/v1/grants?mine=true"))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let issued = sso.auth_events("cli_token_issued").await?;
    ensure!(
        issued.len() == 1 && issued[0]["identity"] == "alice@example.com",
        "{issued:#?}"
    );
    Ok(())
}
