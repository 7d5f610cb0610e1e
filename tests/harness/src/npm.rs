//! npm packages the tests run (the OpenID provider, playwright-core),
//! installed once into a cache outside the repository.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// One package to install from a `package.json` in the repository.
pub struct NpmPackage<'a> {
    /// Shown in errors, e.g. `oidc-provider@9.13.3`.
    pub name: &'a str,
    /// The directory holding the `package.json` to install from.
    pub manifest_dir: &'a Path,
    /// Environment variable naming the cache directory, when set.
    pub cache_env: &'a str,
    /// The cache directory's name under the temporary directory otherwise.
    pub default_cache: &'a str,
    /// The installed file to return, relative to the cache.
    pub entry: &'a str,
    /// Extra environment for npm.
    pub env: &'a [(&'a str, &'a str)],
    /// Which tests need it, for the error when npm is missing.
    pub needed_by: &'a str,
}

impl NpmPackage<'_> {
    /// The path of the installed entry file, installing the package first
    /// when the cache does not hold it yet.
    pub async fn install(&self) -> Result<PathBuf> {
        let cache = match std::env::var_os(self.cache_env) {
            Some(dir) => PathBuf::from(dir),
            None => std::env::temp_dir().join(self.default_cache),
        };
        let entry = cache.join(self.entry);
        if entry.exists() {
            return Ok(entry);
        }
        // Install beside the cache and move it into place, so that a
        // concurrent or interrupted install never leaves a half-filled cache.
        let staging = cache.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        for file in ["package.json", "package-lock.json"] {
            let from = self.manifest_dir.join(file);
            if from.exists() {
                std::fs::copy(&from, staging.join(file))?;
            }
        }
        let mut npm = Command::new("npm");
        npm.args([
            "install",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
        ])
        .current_dir(&staging);
        for (k, v) in self.env {
            npm.env(k, v);
        }
        let out = npm.output().await.with_context(|| {
            format!(
                "running npm: the {} need Node.js 20+ and npm on PATH",
                self.needed_by
            )
        })?;
        if !out.status.success() {
            bail!(
                "npm install ({}) failed in {}:\n{}",
                self.name,
                staging.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if let Err(e) = std::fs::rename(&staging, &cache) {
            // Someone else finished first; theirs is as good as ours.
            let _ = std::fs::remove_dir_all(&staging);
            if !entry.exists() {
                return Err(e)
                    .with_context(|| format!("moving the npm install to {}", cache.display()));
            }
        }
        Ok(entry)
    }
}
