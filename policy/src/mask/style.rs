//! Mask styles: what a masked value becomes.
//!
//! - `redact`: the fixed text [`REDACTED`].
//! - `partial`: [`REDACTED`] followed by the value's last `keep` characters; a value of `keep`
//!   characters or fewer is fully redacted, so short values never pass whole.
//! - `hash`: `h:` and 24 hex digits of HMAC-SHA256 under the gateway's masking key: equal
//!   values give equal hashes (joins and `GROUP BY` on the client still work) while the value
//!   cannot be recovered without the key.
//! - `null`: SQL NULL.
//!
//! Every style but `null` yields text, so the gateway reports masked columns as type `text`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What `redact` and `partial` put in place of the hidden characters.
pub const REDACTED: &str = "****";
/// Hex digits kept from the HMAC in `hash` style (96 bits).
const HASH_HEX: usize = 24;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Redact,
    Partial { keep: usize },
    Hash,
    Null,
}

impl Style {
    /// The masked form of `value` (`None` is NULL). `key` keys the `hash` style.
    pub fn apply(self, key: &[u8], value: &[u8]) -> Option<Vec<u8>> {
        match self {
            Style::Redact => Some(REDACTED.as_bytes().to_vec()),
            Style::Partial { keep } => Some(partial(value, keep)),
            Style::Hash => Some(hash(key, value)),
            Style::Null => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Style::Redact => "redact",
            Style::Partial { .. } => "partial",
            Style::Hash => "hash",
            Style::Null => "null",
        }
    }
}

fn partial(value: &[u8], keep: usize) -> Vec<u8> {
    let mut out = REDACTED.as_bytes().to_vec();
    let Ok(text) = std::str::from_utf8(value) else {
        return out;
    };
    let count = text.chars().count();
    if count > keep {
        let start = text
            .char_indices()
            .nth(count - keep)
            .map_or(text.len(), |(i, _)| i);
        out.extend_from_slice(text.get(start..).unwrap_or("").as_bytes());
    }
    out
}

fn hash(key: &[u8], value: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this never fails; an empty key is still a key.
    let digest = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(value);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => return REDACTED.as_bytes().to_vec(),
    };
    let mut out = b"h:".to_vec();
    for byte in digest.iter().take(HASH_HEX / 2) {
        out.extend_from_slice(format!("{byte:02x}").as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles() {
        let k = b"key";
        assert_eq!(
            Style::Redact.apply(k, b"alice@example.com").unwrap(),
            b"****"
        );
        assert_eq!(
            Style::Partial { keep: 4 }
                .apply(k, b"4111111111111111")
                .unwrap(),
            b"****1111"
        );
        assert_eq!(
            Style::Partial { keep: 4 }.apply(k, b"1234").unwrap(),
            b"****"
        );
        assert_eq!(
            Style::Partial { keep: 2 }
                .apply(k, "zoë".as_bytes())
                .unwrap(),
            "****oë".as_bytes()
        );
        assert_eq!(
            Style::Partial { keep: 2 }
                .apply(k, b"\xff\xfe\xfd")
                .unwrap(),
            b"****"
        );
        assert_eq!(Style::Null.apply(k, b"x"), None);
        let a = Style::Hash.apply(k, b"alice").unwrap();
        assert_eq!(a, Style::Hash.apply(k, b"alice").unwrap());
        assert_ne!(a, Style::Hash.apply(k, b"bob").unwrap());
        assert_ne!(a, Style::Hash.apply(b"other", b"alice").unwrap());
        assert_eq!(a.len(), 2 + HASH_HEX);
        assert!(!String::from_utf8(a).unwrap().contains("alice"));
    }
}
