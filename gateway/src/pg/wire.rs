//! The PostgreSQL v3 wire codec: pure functions from bytes to typed messages and back.
//!
//! No sockets, no policy, no protocol state. The session layer owns a read buffer,
//! calls [`decode_startup`] during the startup phase and [`decode_frame`] afterwards,
//! forwards [`Frame`] bytes untouched where it can, and parses a frame with
//! [`frontend::FrontendMessage::parse`] or [`backend::BackendMessage::parse`] only when it
//! needs to look inside.
//!
//! Layout: `startup` (untagged packets), `frame` (message boundaries), `frontend` and
//! `backend` (typed views + encoders). `password` is part of `frontend`; `auth`,
//! `notice`, `rows` and `command_tag` are parts of `backend`; each parent re-exports its
//! parts. `reader` and `writer` hold the checked field access all of them share.
//!
//! What this guarantees: every length is sign-checked and capped before anything is
//! allocated for it, every count is bounded by the bytes that remain, nothing panics
//! on peer data, and a parsed message has no missing, unterminated, non-UTF-8 or
//! trailing bytes. What it does not: that a message is allowed at this point of the
//! conversation, that its values mean anything (SQL, OIDs, format codes), or that the
//! peer is who it claims to be. Protocol 3.2's variable-length cancel keys are not
//! supported; the session must negotiate clients down to 3.0.

pub mod backend;
pub mod error;
pub mod frame;
pub mod frontend;
pub mod startup;

mod auth;
mod command_tag;
mod notice;
mod password;
mod reader;
mod rows;
#[cfg(test)]
mod test_util;
pub(crate) mod writer;

pub use error::WireError;
pub use frame::{Frame, decode_frame};
pub use startup::{StartupPacket, decode_startup};

/// Hard cap on a startup packet (PostgreSQL's own MAX_STARTUP_PACKET_LENGTH is 10000).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Hard cap on a password/SASL message from a client before authentication.
pub const MAX_AUTH_MESSAGE_LEN: usize = 4_096;
/// Default cap on a regular message after authentication (PostgreSQL caps at 1 GiB).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;

/// Runs every decoder over arbitrary bytes, discarding the results: a target for
/// cargo-fuzz (`fuzz_target!(|data: &[u8]| fuzz_decode(data))`). Its only contract is
/// that it returns, whatever `data` holds.
pub fn fuzz_decode(data: &[u8]) {
    let mut buf = bytes::BytesMut::from(data);
    let _ = decode_startup(&mut buf);
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut buf, MAX_MESSAGE_LEN) {
        let _ = frontend::FrontendMessage::parse(&frame);
        let _ = backend::BackendMessage::parse(&frame);
        let _ = frontend::password_cleartext(frame.body());
        let _ = frontend::sasl_initial_response(frame.body());
        if let Ok(backend::BackendMessage::CommandComplete { tag }) =
            backend::BackendMessage::parse(&frame)
        {
            let _ = backend::command_tag_rows(tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_util::Lcg;

    /// Random frames with valid headers and garbage bodies, under every tag, through
    /// every parser. Nothing may panic; most bodies must be refused.
    #[test]
    fn fuzz_decode_survives_random_frames() {
        let mut rng = Lcg(1);
        for _ in 0..5_000 {
            let tag = rng.next() as u8;
            let n = rng.below(40);
            let body = rng.bytes(n);
            let mut data = vec![tag];
            data.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
            data.extend_from_slice(&body);
            fuzz_decode(&data);
            let n = rng.below(64);
            fuzz_decode(&rng.bytes(n));
        }
    }
}
