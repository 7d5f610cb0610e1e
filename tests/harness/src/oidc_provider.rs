//! A real OpenID provider for the SSO tests: the npm package `oidc-provider`,
//! run by `tests/oidc/provider.mjs`, and a [`Browser`] that signs in through
//! it with plain HTTP requests (its development login form takes any
//! password).
//!
//! The package is installed with `npm ci` from tests/oidc/package-lock.json,
//! once, into a cache outside the repository: `$COUNTERSIGN_NPM_CACHE` or
//! `<temp dir>/countersign-oidc-provider-<version>`.
//! Node.js and npm must be on `PATH`; without them the tests fail and say so.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Must match tests/oidc/package.json (and its lock file).
const VERSION: &str = "9.13.3";

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../oidc")
}

static INSTALL: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();

/// The path of the installed package's entry module, installing it first if needed.
pub async fn ensure_installed() -> Result<PathBuf> {
    INSTALL.get_or_try_init(install).await.cloned()
}

async fn install() -> Result<PathBuf> {
    crate::npm::NpmPackage {
        name: &format!("oidc-provider@{VERSION}"),
        manifest_dir: &oidc_dir(),
        cache_env: "COUNTERSIGN_NPM_CACHE",
        default_cache: &format!("countersign-oidc-provider-{VERSION}"),
        entry: "node_modules/oidc-provider/lib/index.js",
        env: &[],
        needed_by: "SSO tests",
    }
    .install()
    .await
}

/// A registered client of the provider.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uris: Vec<String>,
}

/// A person who can sign in at the provider with their login, which is also
/// their subject (`sub`); any password is accepted.
#[derive(Clone, Debug)]
pub struct User {
    pub email: String,
    pub groups: Vec<String>,
}

/// A running provider; the process is killed when this is dropped.
pub struct OidcProvider {
    pub issuer: String,
    users_file: PathBuf,
    _dir: tempfile::TempDir,
    _child: Child,
}

impl OidcProvider {
    /// Starts a provider. With `clock_skew_seconds`, its token endpoint runs
    /// that far in the past, so the ID tokens it returns are already expired.
    pub async fn start(
        clients: &[ClientSpec],
        users: &BTreeMap<String, User>,
        clock_skew_seconds: u64,
    ) -> Result<OidcProvider> {
        let module = ensure_installed().await?;
        let dir = tempfile::tempdir()?;
        let users_file = dir.path().join("users.json");
        write_users(&users_file, users)?;
        let config = json!({
            "module": module,
            "clients": clients.iter().map(|c| json!({
                "client_id": c.client_id,
                "client_secret": c.client_secret,
                "redirect_uris": c.redirect_uris,
            })).collect::<Vec<_>>(),
            "users_file": users_file,
            "clock_skew_seconds": clock_skew_seconds,
        });
        let mut child = Command::new("node")
            .arg(oidc_dir().join("provider.mjs"))
            .env("OIDC_TEST_CONFIG", config.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("running node: the SSO tests need Node.js 20+ on PATH")?;
        let stdout = child.stdout.take().context("provider stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .context("the OIDC provider did not start within 30 s")??
            .context("the OIDC provider exited before it was ready")?;
        // Keep reading: the provider logs to stdout, and dies on a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let ready: Value =
            serde_json::from_str(&line).with_context(|| format!("provider said {line:?}"))?;
        let issuer = ready["issuer"]
            .as_str()
            .context("provider ready line has no issuer")?
            .to_owned();
        Ok(OidcProvider {
            issuer,
            users_file,
            _dir: dir,
            _child: child,
        })
    }

    /// Replaces the provider's users (read again at each sign-in).
    pub fn set_users(&self, users: &BTreeMap<String, User>) -> Result<()> {
        write_users(&self.users_file, users)
    }
}

fn write_users(path: &Path, users: &BTreeMap<String, User>) -> Result<()> {
    let map: serde_json::Map<String, Value> = users
        .iter()
        .map(|(login, u)| {
            (
                login.clone(),
                json!({ "email": u.email, "groups": u.groups }),
            )
        })
        .collect();
    // Write then rename, so the provider never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, Value::Object(map).to_string())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A scripted browser: follows redirects by hand (so a test can stop at any
/// hop and read its headers) and keeps cookies per host and port.
pub struct Browser {
    http: reqwest::Client,
    cookies: BTreeMap<String, BTreeMap<String, String>>,
}

impl Browser {
    pub fn new() -> Result<Browser> {
        // reqwest is built without a TLS provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
            cookies: BTreeMap::new(),
        })
    }

    fn origin(url: &reqwest::Url) -> String {
        format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        )
    }

    /// The cookie `name` held for `url`'s host and port.
    pub fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let url = reqwest::Url::parse(url).ok()?;
        self.cookies.get(&Self::origin(&url))?.get(name).cloned()
    }

    fn remember(&mut self, url: &reqwest::Url, resp: &reqwest::Response) {
        let jar = self.cookies.entry(Self::origin(url)).or_default();
        for header in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let Ok(text) = header.to_str() else { continue };
            let Some((pair, attrs)) = text.split_once(';').or(Some((text, ""))) else {
                continue;
            };
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let expired = attrs
                .split(';')
                .any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if expired || value.is_empty() {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    /// Sends a request with this browser's cookies for the URL's origin.
    pub async fn send(
        &mut self,
        method: reqwest::Method,
        url: &str,
        form: Option<&[(&str, &str)]>,
        headers: &[(&str, &str)],
    ) -> Result<reqwest::Response> {
        let parsed = reqwest::Url::parse(url).with_context(|| format!("url {url:?}"))?;
        let mut req = self.http.request(method, parsed.clone());
        if let Some(jar) = self.cookies.get(&Self::origin(&parsed))
            && !jar.is_empty()
        {
            let cookie = jar
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req = req.header(reqwest::header::COOKIE, cookie);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(form) = form {
            let body = form
                .iter()
                .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                .collect::<Vec<_>>()
                .join("&");
            req = req
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("requesting {url}"))?;
        self.remember(&parsed, &resp);
        Ok(resp)
    }

    pub async fn get(&mut self, url: &str) -> Result<reqwest::Response> {
        self.send(reqwest::Method::GET, url, None, &[]).await
    }

    /// Starts at `url` and signs in as `login` at the provider, following
    /// redirects until one points at a URL starting with `stop_at`; returns
    /// that URL without requesting it.
    pub async fn sign_in(&mut self, url: &str, login: &str, stop_at: &str) -> Result<String> {
        self.walk(url, Some(login), stop_at).await
    }

    /// Like [`Browser::sign_in`], but cancels at the provider's login page
    /// instead, so the provider answers with `error=access_denied`.
    pub async fn cancel_sign_in(&mut self, url: &str, stop_at: &str) -> Result<String> {
        self.walk(url, None, stop_at).await
    }

    async fn walk(&mut self, url: &str, login: Option<&str>, stop_at: &str) -> Result<String> {
        let mut next = url.to_owned();
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..20 {
            if next.starts_with(stop_at) && form.is_none() {
                return Ok(next);
            }
            let resp = match form.take() {
                Some(fields) => {
                    let pairs: Vec<(&str, &str)> = fields
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    self.send(reqwest::Method::POST, &next, Some(&pairs), &[])
                        .await?
                }
                None => self.get(&next).await?,
            };
            let base = reqwest::Url::parse(&next)?;
            if resp.status().is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .context("redirect without Location")?;
                next = base.join(location)?.to_string();
                continue;
            }
            let status = resp.status();
            let body = resp.text().await?;
            if !status.is_success() {
                bail!("{next} answered {status}: {body}");
            }
            let Some(login) = login else {
                // The development interaction pages have an abort route.
                next = format!("{}/abort", next.trim_end_matches('/'));
                continue;
            };
            let action = body
                .split("action=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .with_context(|| format!("no form on {next}: {body}"))?;
            next = base.join(&action.replace("&amp;", "&"))?.to_string();
            form = Some(if body.contains("name=\"login\"") {
                vec![
                    ("prompt".to_owned(), "login".to_owned()),
                    ("login".to_owned(), login.to_owned()),
                    ("password".to_owned(), "any".to_owned()),
                ]
            } else {
                vec![("prompt".to_owned(), "consent".to_owned())]
            });
        }
        bail!("sign-in did not reach {stop_at} within 20 steps")
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
