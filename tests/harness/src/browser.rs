//! Headless Chromium for the console's browser tests, driven by
//! playwright-core from a small Node script per scenario (tests/console/).
//!
//! Chromium is the Debian package (`apt-get install chromium`; tests/run
//! installs it), found at `$COUNTERSIGN_CHROMIUM` or `/usr/bin/chromium`.
//! playwright-core is installed with npm, once, into a cache outside the
//! repository: `$COUNTERSIGN_PLAYWRIGHT_CACHE` or
//! `<temp dir>/countersign-playwright-core-<version>`; it never downloads a
//! browser of its own. Without Node.js, npm or Chromium the tests fail and
//! say what to install.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Must match tests/console/package.json.
const VERSION: &str = "1.65.1";

fn console_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../console")
}

static INSTALL: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();

/// The installed playwright-core's ES module entry, installing it if needed.
pub async fn ensure_playwright() -> Result<PathBuf> {
    INSTALL.get_or_try_init(install).await.cloned()
}

async fn install() -> Result<PathBuf> {
    crate::npm::NpmPackage {
        name: &format!("playwright-core@{VERSION}"),
        manifest_dir: &console_dir(),
        cache_env: "COUNTERSIGN_PLAYWRIGHT_CACHE",
        default_cache: &format!("countersign-playwright-core-{VERSION}"),
        entry: "node_modules/playwright-core/index.mjs",
        // playwright-core has no install script, but it must never fetch a
        // browser build.
        env: &[("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")],
        needed_by: "browser tests",
    }
    .install()
    .await
}

/// The Chromium binary the tests drive.
pub fn chromium() -> Result<PathBuf> {
    let path = std::env::var_os("COUNTERSIGN_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !path.exists() {
        bail!(
            "the browser tests need Chromium at {} (apt-get install chromium, or set \
             COUNTERSIGN_CHROMIUM)",
            path.display()
        );
    }
    Ok(path)
}

/// Where screenshots go: `$CARGO_TARGET_DIR/console-screenshots/<test>`;
/// without the variable, the target directory the running test binary was
/// built in (`<target>/debug/deps/<test>`).
pub fn screenshot_dir(test: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.parent()?.to_path_buf())
        })
        .unwrap_or_else(std::env::temp_dir);
    target.join("console-screenshots").join(test)
}

/// A running scenario script: its progress lines, then its end.
pub struct Scenario {
    lines: Lines<BufReader<ChildStdout>>,
    stderr: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Scenario {
    /// Starts `tests/console/<script>` with `config` (merged with the module,
    /// Chromium and screenshot paths) in `CONSOLE_TEST_CONFIG`.
    pub async fn start(script: &str, test: &str, mut config: Value) -> Result<Scenario> {
        let module = ensure_playwright().await?;
        let shots = screenshot_dir(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots)?;
        println!("console screenshots: {}", shots.display());
        let obj = config
            .as_object_mut()
            .context("scenario config must be a JSON object")?;
        obj.insert("module".into(), module.to_string_lossy().into());
        obj.insert("chromium".into(), chromium()?.to_string_lossy().into());
        obj.insert("screenshots".into(), shots.to_string_lossy().into());
        let dir = tempfile::tempdir()?;
        let stderr = dir.path().join("stderr.log");
        let mut child = Command::new("node")
            .arg(console_dir().join(script))
            .env("CONSOLE_TEST_CONFIG", config.to_string())
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .kill_on_drop(true)
            .spawn()
            .context("running node: the browser tests need Node.js 20+ on PATH")?;
        let stdout = child.stdout.take().context("scenario stdout")?;
        Ok(Scenario {
            lines: BufReader::new(stdout).lines(),
            stderr,
            child,
            _dir: dir,
        })
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next progress line (`{"step": …}` or `{"done": true}`), within
    /// `timeout`. A line with `error` fails with the script's message.
    pub async fn next(&mut self, timeout: Duration) -> Result<Value> {
        loop {
            let line = tokio::time::timeout(timeout, self.lines.next_line())
                .await
                .with_context(|| {
                    format!(
                        "the browser scenario said nothing for {timeout:?}; stderr:\n{}",
                        self.stderr_text()
                    )
                })??;
            let Some(line) = line else {
                bail!(
                    "the browser scenario ended early; stderr:\n{}",
                    self.stderr_text()
                );
            };
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                println!("scenario: {line}");
                continue;
            };
            if let Some(error) = value.get("error") {
                bail!(
                    "browser scenario failed: {}\nstderr:\n{}",
                    error.as_str().unwrap_or_default(),
                    self.stderr_text()
                );
            }
            if value.get("step").and_then(Value::as_str) == Some("screenshot") {
                println!("screenshot: {}", value["file"].as_str().unwrap_or_default());
                continue;
            }
            return Ok(value);
        }
    }

    /// Waits for step `name`, failing on any other step first.
    pub async fn expect_step(&mut self, name: &str, timeout: Duration) -> Result<Value> {
        let value = self.next(timeout).await?;
        if value.get("step").and_then(Value::as_str) != Some(name) {
            bail!("expected browser step {name:?}, got {value}");
        }
        Ok(value)
    }

    /// Waits for the script's `done` and its exit.
    pub async fn finish(mut self, timeout: Duration) -> Result<()> {
        let value = self.next(timeout).await?;
        if value.get("done").and_then(Value::as_bool) != Some(true) {
            bail!("expected the browser scenario to finish, got {value}");
        }
        let status = tokio::time::timeout(timeout, self.child.wait()).await??;
        if !status.success() {
            bail!(
                "the browser scenario exited with {status}; stderr:\n{}",
                self.stderr_text()
            );
        }
        Ok(())
    }
}
