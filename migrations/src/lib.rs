//! Schema migrations for the Countersign control-plane store.
//!
//! One `mNNNN_name.rs` file per migration; the migration's name comes from the
//! file. A shipped migration is never edited: mistakes get a new migration.
//! Every migration runs on both PostgreSQL (production) and SQLite (`countersign dev`); one
//! that builds what only PostgreSQL has (a trigram index) does nothing on SQLite.

pub use sea_orm_migration::prelude::*;

mod m0001_initial;
mod m0002_policies;
mod m0003_reviews;
mod m0004_service_credentials;
mod m0005_role_bindings;
mod m0006_approval_scope;
mod m0007_grants;
mod m0008_audit_chain;
mod m0009_audit_search;
mod m0010_gateway_enrollment;
mod m0011_sso;
mod m0012_audit_texts;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_initial::Migration),
            Box::new(m0002_policies::Migration),
            Box::new(m0003_reviews::Migration),
            Box::new(m0004_service_credentials::Migration),
            Box::new(m0005_role_bindings::Migration),
            Box::new(m0006_approval_scope::Migration),
            Box::new(m0007_grants::Migration),
            Box::new(m0008_audit_chain::Migration),
            Box::new(m0009_audit_search::Migration),
            Box::new(m0010_gateway_enrollment::Migration),
            Box::new(m0011_sso::Migration),
            Box::new(m0012_audit_texts::Migration),
        ]
    }
}
