//! The upstream catalog masking needs: every user relation's columns, view definitions,
//! and the names of functions outside `pg_catalog`. Read over a connection of the gateway's
//! own (the resource's credentials, the session's database) and cached per resource and
//! database for [`TTL`]; a session reloads it when a result names a relation it does not
//! know, and after DDL it ran itself.

use super::super::stream::MessageReader;
use super::super::upstream;
use super::super::wire::backend::BackendMessage;
use super::super::wire::frontend;
use crate::config::Upstream;
use bytes::BytesMut;
use countersign_policy::mask::{Catalog, CatalogRelation, RelationKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// How long a loaded catalog is used before it is read again.
pub const TTL: Duration = Duration::from_secs(30);
/// How long one load may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

const COLUMNS_SQL: &str = "SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text, a.attnum, a.attname \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
     WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm') \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'; \
     SELECT c.oid::int8, pg_catalog.pg_get_viewdef(c.oid) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema'); \
     SELECT DISTINCT p.proname FROM pg_catalog.pg_proc p \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// Where a catalog comes from.
#[derive(Clone)]
pub struct CatalogSource {
    pub resource: Arc<str>,
    pub database: String,
    pub upstream: Arc<Upstream>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A loaded catalog and when it was read.
type Entry = (Instant, Arc<Catalog>);

/// Catalogs by (resource, database), shared by all sessions of a gateway.
#[derive(Default)]
pub struct CatalogCache {
    entries: Mutex<HashMap<(Arc<str>, String), Entry>>,
}

impl CatalogCache {
    /// The cached catalog for `source`, or a fresh one when there is none, it is older than
    /// [`TTL`], or `reload` is set.
    pub async fn get(&self, source: &CatalogSource, reload: bool) -> Result<Arc<Catalog>, String> {
        let key = (source.resource.clone(), source.database.clone());
        if !reload
            && let Ok(entries) = self.entries.lock()
            && let Some((at, catalog)) = entries.get(&key)
            && at.elapsed() < TTL
        {
            return Ok(catalog.clone());
        }
        let catalog = Arc::new(
            tokio::time::timeout(LOAD_TIMEOUT, load(source))
                .await
                .map_err(|_| "reading the catalog timed out".to_owned())??,
        );
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(key, (Instant::now(), catalog.clone()));
        }
        Ok(catalog)
    }
}

async fn load(source: &CatalogSource) -> Result<Catalog, String> {
    let ready = upstream::connect(
        &source.upstream,
        source.tls.as_ref(),
        &source.database,
        &[(
            "application_name".to_owned(),
            "countersign-catalog".to_owned(),
        )],
    )
    .await
    .map_err(|e| format!("cannot connect to read the catalog: {e}"))?;
    let mut reader = ready.reader;
    let mut out = BytesMut::new();
    frontend::encode_query(COLUMNS_SQL, &mut out);
    frontend::encode_terminate(&mut out);
    // The connection is the reader's; writes go straight to it.
    let conn = reader.inner_mut();
    conn.write_all(&out).await.map_err(|e| e.to_string())?;
    conn.flush().await.map_err(|e| e.to_string())?;
    let sets = read_results(&mut reader).await?;
    let mut sets = sets.into_iter();
    let (columns, views, functions) = match (sets.next(), sets.next(), sets.next()) {
        (Some(c), Some(v), Some(f)) => (c, v, f),
        _ => return Err("the catalog query returned too few results".to_owned()),
    };
    build(columns, views, functions)
}

type Rows = Vec<Vec<Option<String>>>;

/// Reads the result sets of one simple Query up to ReadyForQuery.
async fn read_results<R>(reader: &mut MessageReader<R>) -> Result<Vec<Rows>, String>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut sets: Vec<Rows> = Vec::new();
    loop {
        let frame = reader.next().await.map_err(|e| e.to_string())?;
        match BackendMessage::parse(&frame).map_err(|e| e.to_string())? {
            BackendMessage::RowDescription { .. } => sets.push(Vec::new()),
            BackendMessage::DataRow { columns } => {
                let row = columns
                    .iter()
                    .map(|c| c.map(|v| String::from_utf8_lossy(v).into_owned()))
                    .collect();
                sets.last_mut()
                    .ok_or("a row arrived before its description")?
                    .push(row);
            }
            BackendMessage::ErrorResponse(e) => {
                return Err(format!(
                    "the catalog query failed: {}",
                    e.message().unwrap_or("no message")
                ));
            }
            BackendMessage::ReadyForQuery { .. } => return Ok(sets),
            _ => {}
        }
    }
}

fn build(columns: Rows, views: Rows, functions: Rows) -> Result<Catalog, String> {
    let bad = || "the catalog query returned a malformed row".to_owned();
    let mut relations: Vec<CatalogRelation> = Vec::new();
    let mut by_oid: HashMap<u32, usize> = HashMap::new();
    for row in columns {
        let field = |i: usize| row.get(i).cloned().flatten().ok_or_else(bad);
        let oid: u32 = field(0)?.parse().map_err(|_| bad())?;
        let attnum: i16 = field(4)?.parse().map_err(|_| bad())?;
        let index = match by_oid.get(&oid) {
            Some(i) => *i,
            None => {
                let kind = match field(3)?.as_str() {
                    "v" | "m" => RelationKind::View,
                    _ => RelationKind::Table,
                };
                relations.push(CatalogRelation {
                    oid,
                    schema: field(1)?,
                    name: field(2)?,
                    kind,
                    columns: Vec::new(),
                    definition: None,
                });
                by_oid.insert(oid, relations.len() - 1);
                relations.len() - 1
            }
        };
        if let Some(rel) = relations.get_mut(index) {
            rel.columns.push((attnum, field(5)?));
        }
    }
    for row in views {
        let oid: u32 = row
            .first()
            .cloned()
            .flatten()
            .and_then(|o| o.parse().ok())
            .ok_or_else(bad)?;
        if let Some(rel) = by_oid.get(&oid).and_then(|i| relations.get_mut(*i)) {
            rel.definition = row.get(1).cloned().flatten();
        }
    }
    let functions = functions
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten())
        .collect();
    Ok(Catalog {
        relations,
        functions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some((*s).to_owned())).collect()
    }

    #[test]
    fn builds_relations_views_and_functions() {
        let c = build(
            vec![
                row(&["16384", "public", "customers", "r", "1", "id"]),
                row(&["16384", "public", "customers", "r", "2", "email"]),
                row(&["16390", "public", "contacts", "v", "1", "email"]),
            ],
            vec![row(&["16390", " SELECT customers.email FROM customers;"])],
            vec![row(&["leak"])],
        )
        .unwrap();
        assert_eq!(c.relations.len(), 2);
        assert_eq!(
            c.relations[0].columns,
            vec![(1, "id".into()), (2, "email".into())]
        );
        assert_eq!(c.relations[1].kind, RelationKind::View);
        assert!(
            c.relations[1]
                .definition
                .as_deref()
                .unwrap()
                .contains("email")
        );
        assert_eq!(c.functions, vec!["leak"]);
        assert!(build(vec![row(&["x"])], vec![], vec![]).is_err());
    }
}
