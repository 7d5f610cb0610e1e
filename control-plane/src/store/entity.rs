//! sea-orm entities, one per table. See `migrations/` for the schema.

pub mod api_key;
pub mod approval;
pub mod audit_checkpoint;
pub mod audit_event;
pub mod audit_head;
pub mod audit_purge_permit;
pub mod cli_login_code;
pub mod console_session;
pub mod enrollment_token;
pub mod gateway;
pub mod identity;
pub mod identity_group;
pub mod oidc_login;
pub mod oidc_subject;
pub mod policy;
pub mod resource;
pub mod review;
pub mod role_binding;
pub mod session;
pub mod setting;
pub mod token;
pub mod workload_trust;
