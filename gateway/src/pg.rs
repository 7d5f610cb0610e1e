//! PostgreSQL front end: wire codec, session handshake, upstream connection and relay.
//!
//! Layout: `wire` (pure codec), `stream` (plain/TLS streams and the message
//! reader), `handshake` (startup phase), `upstream` (connect and authenticate),
//! `cancel` (CancelRequest routing), `track` (responses → statements),
//! `relay` (the two directions), `mask` (result masking), `session` (one connection end to
//! end), `threads` (the session threads sessions run on).

pub mod cancel;
pub mod handshake;
pub mod inspect;
pub mod mask;
pub mod relay;
pub mod review;
pub mod session;
pub mod stream;
pub mod threads;
pub mod track;
pub mod upstream;
pub mod wire;
