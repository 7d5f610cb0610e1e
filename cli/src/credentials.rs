//! Access tokens saved by `countersign login`, one per control plane, in
//! `$XDG_CONFIG_HOME/countersign/credentials.toml` (default
//! `~/.config/countersign/credentials.toml`), readable by the owner only.
//!
//! Commands that take `--server` use the saved token when `--token` (or
//! `COUNTERSIGN_TOKEN`) is not given. An expired token is not used: the
//! command says to log in again.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    /// Keyed by the server URL as given to `--server`, without a trailing `/`.
    #[serde(default)]
    pub servers: BTreeMap<String, SavedToken>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedToken {
    pub token: String,
    pub identity: String,
    pub expires_at: DateTime<Utc>,
}

/// The credentials file's path.
pub fn path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?,
        )
        .join(".config"),
    };
    Ok(base.join("countersign").join("credentials.toml"))
}

fn key(server: &str) -> String {
    server.trim_end_matches('/').to_owned()
}

pub fn load() -> anyhow::Result<CredentialsFile> {
    let path = path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(CredentialsFile::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Saves `token` for `server`, replacing any earlier one. The file is written
/// whole to a temporary file created with mode 0600, then renamed over the
/// old one, so it is never readable by others, even for a moment.
pub fn save(server: &str, token: SavedToken) -> anyhow::Result<PathBuf> {
    let path = path()?;
    let dir = path
        .parent()
        .context("the credentials path has no directory")?
        .to_owned();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = load()?;
    file.servers.insert(key(server), token);
    let text = toml::to_string(&file).context("encoding the credentials")?;
    let tmp = dir.join(format!(".credentials.toml.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = std::fs::remove_file(&tmp);
    let mut out = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(path)
}

/// The saved, unexpired token for `server`.
pub fn token_for(server: &str) -> anyhow::Result<String> {
    let file = load()?;
    let Some(saved) = file.servers.get(&key(server)) else {
        bail!(
            "no access token: pass --token, or run `countersign login --server {}`",
            key(server)
        );
    };
    if saved.expires_at <= Utc::now() {
        bail!(
            "the saved token for {} expired at {}; run `countersign login --server {}`",
            saved.identity,
            saved.expires_at,
            key(server)
        );
    }
    Ok(saved.token.clone())
}

/// `--token` when given, else the token saved for `server`.
pub fn resolve(
    server: &crate::client::ServerArgs,
    token: &Option<String>,
) -> anyhow::Result<String> {
    match token {
        Some(t) => Ok(t.clone()),
        None => token_for(&server.server),
    }
}
