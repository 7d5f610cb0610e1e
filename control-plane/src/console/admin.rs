//! Admin pages: resources, role bindings, policy versions (a diff between
//! two versions, and a dry run of one statement), and enrolled gateways.
//! Admins only (`require_admin`); the pages read, they change nothing: the
//! API and the CLI make changes, and audit them.

use super::{ConsoleError, Nav, Viewer, render, when};
use crate::service::ControlPlane;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use countersign_policy::{Policy, SessionContext, classify, decide};

/// Longest policy text (in lines) the diff compares; policies are short,
/// and the comparison table grows with the product of the two lengths.
const DIFF_MAX_LINES: usize = 1_500;
/// Longest statement a dry run takes.
const DRY_RUN_MAX: usize = 100_000;

/// The admin check every admin page starts with: the 403 page for others.
fn not_admin(cp: &ControlPlane, viewer: &Viewer) -> Option<Response> {
    cp.require_admin(&viewer.principal)
        .err()
        .map(|e| ConsoleError::from(e).for_viewer(viewer).into_response())
}

/// A table: headers and rows of text cells.
pub struct Table {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Template)]
#[template(path = "admin_table.html")]
struct TablePage {
    nav: Nav,
    section: &'static str,
    title: &'static str,
    intro: &'static str,
    table: Table,
}

/// `GET /admin/resources`
pub async fn resources(State(cp): State<ControlPlane>, viewer: Viewer) -> Response {
    if let Some(refused) = not_admin(&cp, &viewer) {
        return refused;
    }
    let list = match cp.store().list_resources().await {
        Ok(l) => l,
        Err(e) => return ConsoleError::from(e).for_viewer(&viewer).into_response(),
    };
    let table = Table {
        headers: vec!["Name", "Kind", "Environment", "Strict audit", "Created"],
        rows: list
            .iter()
            .map(|r| {
                vec![
                    r.name.clone(),
                    r.kind.clone(),
                    r.environment.clone(),
                    if r.strict_audit { "yes" } else { "no" }.to_owned(),
                    when(&r.created_at),
                ]
            })
            .collect(),
    };
    render(
        StatusCode::OK,
        &TablePage {
            nav: viewer.nav,
            section: "resources",
            title: "Resources",
            intro: "What gateways serve. Change them with the API or `[[resource]]` in the control plane's config.",
            table,
        },
    )
}

/// `GET /admin/bindings`
pub async fn bindings(State(cp): State<ControlPlane>, viewer: Viewer) -> Response {
    if let Some(refused) = not_admin(&cp, &viewer) {
        return refused;
    }
    let list = match cp.list_bindings().await {
        Ok(l) => l,
        Err(e) => return ConsoleError::from(e).for_viewer(&viewer).into_response(),
    };
    let any = |v: &[String]| {
        if v.is_empty() {
            "any".to_owned()
        } else {
            v.join(", ")
        }
    };
    let table = Table {
        headers: vec![
            "Role",
            "Member",
            "Resources",
            "Environments",
            "Created by",
            "Created",
        ],
        rows: list
            .iter()
            .map(|b| {
                vec![
                    b.role.clone(),
                    b.member.clone(),
                    any(&b.resources),
                    any(&b.environments),
                    b.created_by.clone(),
                    when(&b.created_at),
                ]
            })
            .collect(),
    };
    render(
        StatusCode::OK,
        &TablePage {
            nav: viewer.nav,
            section: "bindings",
            title: "Role bindings",
            intro: "Who may request, approve, administer and audit, and where. Change them with `countersign binding` or in the policy.",
            table,
        },
    )
}

/// `GET /admin/gateways`
pub async fn gateways(State(cp): State<ControlPlane>, viewer: Viewer) -> Response {
    let list = match cp.list_gateways(&viewer.principal).await {
        Ok(l) => l,
        Err(e) => return ConsoleError::from(e).for_viewer(&viewer).into_response(),
    };
    let now = chrono::Utc::now();
    let table = Table {
        headers: vec![
            "Gateway",
            "Environment",
            "Status",
            "Version",
            "Last seen",
            "Certificate until",
            "Enrolled",
        ],
        rows: list
            .iter()
            .map(|g| {
                let status = if g.not_after <= now {
                    "certificate expired"
                } else if now - g.last_seen > chrono::Duration::minutes(5) {
                    "not seen for 5 min"
                } else {
                    "connected recently"
                };
                vec![
                    g.id.clone(),
                    g.environment.clone(),
                    status.to_owned(),
                    g.version.clone(),
                    when(&g.last_seen),
                    when(&g.not_after),
                    when(&g.enrolled_at),
                ]
            })
            .collect(),
    };
    render(
        StatusCode::OK,
        &TablePage {
            nav: viewer.nav,
            section: "gateways",
            title: "Gateways",
            intro: "Gateways enrolled with mutual TLS. Last seen is the last enrollment, renewal or config watch.",
            table,
        },
    )
}

/// The policy page's form: a diff (`from`, `to`) and a dry run.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyForm {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// The version a dry run uses; empty: the newest.
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub identity: String,
    /// Comma-separated group names.
    #[serde(default)]
    pub groups: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub access_level: String,
    #[serde(default)]
    pub statement: String,
}

/// One line of a diff: `' '` same, `'-'` only in the old, `'+'` only in the new.
pub struct DiffLine {
    pub mark: char,
    pub class: &'static str,
    pub text: String,
}

/// The outcome of a dry run.
pub struct DryRun {
    pub version: u64,
    pub action: String,
    pub rule: String,
    pub message: String,
    pub approvals: String,
    pub kinds: String,
    pub parse_error: String,
}

/// A version as the list shows it.
pub struct VersionRow {
    pub version: u64,
    pub created_by: String,
    pub created: String,
    pub digest: String,
}

#[derive(Template)]
#[template(path = "admin_policies.html")]
struct PolicyPage {
    nav: Nav,
    section: &'static str,
    form: PolicyForm,
    versions: Vec<VersionRow>,
    diff: Option<Vec<DiffLine>>,
    dry_run: Option<DryRun>,
    error: Option<String>,
}

/// `GET /admin/policies`: versions; with `from` and `to` their diff; with
/// `statement` a dry run of it against a version.
pub async fn policies(
    State(cp): State<ControlPlane>,
    viewer: Viewer,
    query: Result<Query<PolicyForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(refused) = not_admin(&cp, &viewer) {
        return refused;
    }
    let form = match query {
        Ok(Query(f)) => f,
        Err(e) => {
            return ConsoleError::new(StatusCode::BAD_REQUEST, e.body_text())
                .for_viewer(&viewer)
                .into_response();
        }
    };
    let versions = match cp.store().list_policies().await {
        Ok(v) => v,
        Err(e) => return ConsoleError::from(e).for_viewer(&viewer).into_response(),
    };
    let mut error = None;
    // A version the list has (the list carries no text; `load` reads it).
    let find = |field: &str, v: &str| -> Result<Option<u64>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        let n: u64 = v
            .parse()
            .map_err(|_| format!("{field}: {v:?} is not a version number"))?;
        if versions.iter().any(|p| p.version == n) {
            Ok(Some(n))
        } else {
            Err(format!("{field}: there is no policy version {n}"))
        }
    };
    let diff = match (find("from", &form.from), find("to", &form.to)) {
        (Ok(Some(a)), Ok(Some(b))) => {
            let texts = match (load(&cp, a).await, load(&cp, b).await) {
                (Ok(a), Ok(b)) => Ok((a.text, b.text)),
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            match texts.and_then(|(a, b)| line_diff(&a, &b)) {
                Ok(d) => Some(d),
                Err(e) => {
                    error = Some(e);
                    None
                }
            }
        }
        (Ok(None), Ok(None)) => None,
        (Ok(_), Ok(_)) => {
            error = Some("a diff needs both versions".to_owned());
            None
        }
        (Err(e), _) | (_, Err(e)) => {
            error = Some(e);
            None
        }
    };
    let dry_run = if form.statement.trim().is_empty() {
        None
    } else {
        let version = match find("version", &form.version) {
            Ok(Some(v)) => Some(v),
            Ok(None) => versions.first().map(|p| p.version),
            Err(e) => {
                error = Some(e);
                None
            }
        };
        match version {
            Some(v) => match load(&cp, v).await {
                Ok(v) => match dry_run(&cp, &v, &form).await {
                    Ok(d) => Some(d),
                    Err(e) => {
                        error = Some(e);
                        None
                    }
                },
                Err(e) => {
                    error = Some(e);
                    None
                }
            },
            None => {
                error.get_or_insert_with(|| "there is no policy yet".to_owned());
                None
            }
        }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let rows = versions
        .iter()
        .map(|p| VersionRow {
            version: p.version,
            created_by: p.created_by.clone(),
            created: when(&p.created_at),
            digest: p.digest.chars().take(12).collect(),
        })
        .collect();
    render(
        status,
        &PolicyPage {
            nav: viewer.nav,
            section: "policies",
            form,
            versions: rows,
            diff,
            dry_run,
            error,
        },
    )
}

/// Policy version `n` with its text.
async fn load(cp: &ControlPlane, n: u64) -> Result<crate::store::policies::PolicyVersion, String> {
    match cp.store().policy(n).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(format!("there is no policy version {n}")),
        Err(e) => {
            tracing::error!(error = %e, version = n, "reading a policy version failed");
            Err(format!("policy version {n} could not be read"))
        }
    }
}

/// Decides `form.statement` with policy `v` for the session the form
/// describes, as the gateway would (the same pure `decide`).
async fn dry_run(
    cp: &ControlPlane,
    v: &crate::store::policies::PolicyVersion,
    form: &PolicyForm,
) -> Result<DryRun, String> {
    if form.statement.len() > DRY_RUN_MAX {
        return Err(format!("the statement is longer than {DRY_RUN_MAX} bytes"));
    }
    let policy = Policy::parse(&v.text)
        .map_err(|e| format!("policy version {} does not parse: {e}", v.version))?;
    let resource = form.resource.trim();
    if resource.is_empty() {
        return Err("a dry run needs a resource".to_owned());
    }
    let environment = cp
        .store()
        .list_resources()
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "listing resources for a dry run failed");
            "the resources could not be read".to_owned()
        })?
        .into_iter()
        .find(|r| r.name == resource)
        .map(|r| r.environment)
        .ok_or_else(|| format!("there is no resource {resource:?}"))?;
    let groups: Vec<String> = form
        .groups
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect();
    let level = Some(form.access_level.trim()).filter(|l| !l.is_empty());
    let ctx = SessionContext {
        identity: form.identity.trim(),
        groups: &groups,
        resource,
        environment: &environment,
        access_level: level,
    };
    let facts = classify(&form.statement);
    let d = decide(&policy, &ctx, &facts, &form.statement);
    Ok(DryRun {
        version: v.version,
        action: d.action.as_str().to_owned(),
        rule: d
            .rule
            .unwrap_or_else(|| "none (the default allows)".to_owned()),
        message: d.message.unwrap_or_default(),
        approvals: if d.approvals > 0 {
            format!(
                "{} from {}",
                d.approvals,
                if d.approvers.is_empty() {
                    "the default approvers".to_owned()
                } else {
                    d.approvers.join(", ")
                }
            )
        } else {
            String::new()
        },
        kinds: facts.kind_names().join(", "),
        parse_error: facts.parse_error.clone().unwrap_or_default(),
    })
}

/// A line diff of `old` and `new` (longest common subsequence).
fn line_diff(old: &str, new: &str) -> Result<Vec<DiffLine>, String> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() > DIFF_MAX_LINES || b.len() > DIFF_MAX_LINES {
        return Err(format!(
            "these policies are longer than {DIFF_MAX_LINES} lines; compare them with the CLI"
        ));
    }
    // lcs[i][j]: length of the common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let line = |mark: char, text: &str| DiffLine {
        mark,
        class: match mark {
            '+' => "added",
            '-' => "removed",
            _ => "same",
        },
        text: text.to_owned(),
    };
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(line(' ', a[i]));
            i += 1;
            j += 1;
        } else if lcs[i + 1][j] >= lcs[i][j + 1] {
            out.push(line('-', a[i]));
            i += 1;
        } else {
            out.push(line('+', b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|t| line('-', t)));
    out.extend(b[j..].iter().map(|t| line('+', t)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::line_diff;

    #[test]
    fn diff_marks_added_and_removed_lines() {
        let d = line_diff("a\nb\nc\n", "a\nc\nd\n").unwrap();
        let marks: String = d.iter().map(|l| l.mark).collect();
        let texts: Vec<&str> = d.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(marks, " - +");
        assert_eq!(texts, ["a", "b", "c", "d"]);
    }
}
