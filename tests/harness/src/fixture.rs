//! The usual end-to-end setup: shared services checked, a fresh database, and a
//! `countersign dev` whose resource `dev` points at that database.

use anyhow::Result;

use crate::conn::ConnParams;
use crate::db::TestDb;
use crate::dev_server::{DevServer, DevServerOpts};

/// The resource name the fixture's upstream is registered under.
pub const RESOURCE: &str = "dev";

/// A database plus a dev server in front of it. The server is declared first so it stops
/// before the database is dropped.
pub struct Fixture {
    pub server: DevServer,
    pub db: TestDb,
}

impl Fixture {
    /// `bin` is the `countersign` binary (`env!("CARGO_BIN_EXE_countersign")`).
    pub async fn start(bin: &str, prefix: &str) -> Result<Fixture> {
        Self::start_with(bin, prefix, DevServerOpts::default()).await
    }

    /// Like [`Fixture::start`]; `opts` gets the `dev` upstream prepended.
    pub async fn start_with(bin: &str, prefix: &str, mut opts: DevServerOpts) -> Result<Fixture> {
        crate::ensure_services()?;
        let db = TestDb::create(prefix).await?;
        opts.upstreams
            .insert(0, (RESOURCE.to_owned(), db.upstream_url()));
        let server = DevServer::start(bin, opts).await?;
        Ok(Fixture { server, db })
    }

    /// Direct connection to the database, bypassing the gateway.
    pub fn direct(&self) -> ConnParams {
        self.db.params()
    }

    /// Through the gateway as the banner's user with its token, to resource `dev`.
    pub fn gateway(&self) -> ConnParams {
        self.server
            .gateway_params(self.server.user(), self.server.user_token(), RESOURCE)
    }

    /// Through the gateway as `identity` with `token`, to resource `dev`.
    pub fn gateway_as(&self, identity: &str, token: &str) -> ConnParams {
        self.server.gateway_params(identity, token, RESOURCE)
    }
}
