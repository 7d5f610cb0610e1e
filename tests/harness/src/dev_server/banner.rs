//! The startup banner `countersign dev` prints on stdout, and its parser.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};

/// The parsed startup banner.
#[derive(Clone, Debug, PartialEq)]
pub struct Banner {
    pub admin_token: String,
    pub user: String,
    pub user_token: String,
    /// e.g. `http://127.0.0.1:41234`
    pub http: String,
    /// e.g. `http://127.0.0.1:41235`
    pub grpc: String,
    pub pg: SocketAddr,
    pub resources: Vec<String>,
    /// The text after `psql: `.
    pub psql_hint: String,
}

/// Parses banner lines up to and including `ready`. Unknown `key=value` lines are ignored.
pub fn parse_banner(lines: &[String]) -> Result<Banner> {
    let (mut admin_token, mut user, mut user_token) = (None, None, None);
    let (mut http, mut grpc, mut pg, mut psql_hint) = (None, None, None, None);
    let mut resources = Vec::new();
    let mut ready = false;
    for line in lines {
        if line == "ready" {
            ready = true;
            break;
        }
        if let Some(hint) = line.strip_prefix("psql: ") {
            psql_hint = Some(hint.to_owned());
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("banner line is not key=value: {line:?}");
        };
        let value = value.to_owned();
        match key {
            "admin_token" => admin_token = Some(value),
            "user" => user = Some(value),
            "user_token" => user_token = Some(value),
            "http" => http = Some(value),
            "grpc" => grpc = Some(value),
            "pg" => pg = Some(value.parse().with_context(|| format!("pg={value}"))?),
            "resource" => resources.push(value),
            _ => {}
        }
    }
    if !ready {
        bail!("banner has no `ready` line");
    }
    if resources.is_empty() {
        bail!("banner lists no resource");
    }
    let missing = |k: &str| anyhow::anyhow!("banner lacks `{k}`: {lines:?}");
    Ok(Banner {
        admin_token: admin_token.ok_or_else(|| missing("admin_token"))?,
        user: user.ok_or_else(|| missing("user"))?,
        user_token: user_token.ok_or_else(|| missing("user_token"))?,
        http: http.ok_or_else(|| missing("http"))?,
        grpc: grpc.ok_or_else(|| missing("grpc"))?,
        pg: pg.ok_or_else(|| missing("pg"))?,
        resources,
        psql_hint: psql_hint.ok_or_else(|| missing("psql"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANNER: &str = "admin_token=adm\nuser=dev@localhost\nuser_token=tok\n\
        http=http://127.0.0.1:1001\ngrpc=http://127.0.0.1:1002\npg=127.0.0.1:1003\n\
        resource=dev\nresource=other\n\
        psql: PGPASSWORD=tok psql \"host=127.0.0.1 port=1003 user=dev@localhost dbname=dev\"\n\
        ready";

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn parses_the_banner() {
        let banner = parse_banner(&lines(BANNER)).unwrap();
        assert_eq!(banner.admin_token, "adm");
        assert_eq!(banner.user_token, "tok");
        assert_eq!(banner.http, "http://127.0.0.1:1001");
        assert_eq!(banner.pg, "127.0.0.1:1003".parse().unwrap());
        assert_eq!(banner.resources, ["dev", "other"]);
        assert!(banner.psql_hint.starts_with("PGPASSWORD=tok psql "));
    }

    #[test]
    fn rejects_incomplete_banners() {
        assert!(parse_banner(&lines(&BANNER.replace("ready", ""))).is_err());
        assert!(parse_banner(&lines(&BANNER.replace("user_token=tok\n", ""))).is_err());
        assert!(parse_banner(&lines(&BANNER.replace("pg=127.0.0.1:1003", "pg=nope"))).is_err());
    }
}
