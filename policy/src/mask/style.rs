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
use std::fmt;

/// The gateway's masking key, ready to hash with: the HMAC's inner and outer key blocks are
/// computed once, so hashing a value costs the two SHA-256 compressions of the value itself
/// rather than four.
#[derive(Clone)]
pub struct MaskKey(Hmac<Sha256>);

impl MaskKey {
    /// HMAC accepts keys of any length; an empty key is still a key.
    pub fn new(key: &[u8]) -> MaskKey {
        // `new_from_slice` of an HMAC never fails (long keys are hashed, short ones padded);
        // the all-zero block is only the fallback its signature asks for.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| <Hmac<Sha256> as Mac>::new(&Default::default()));
        MaskKey(mac)
    }
}

impl fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

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
    pub fn apply(self, key: &MaskKey, value: &[u8]) -> Option<Vec<u8>> {
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

fn hash(key: &MaskKey, value: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut mac = key.0.clone();
    mac.update(value);
    let digest = mac.finalize().into_bytes();
    let mut out = Vec::with_capacity(2 + HASH_HEX);
    out.extend_from_slice(b"h:");
    for byte in digest.iter().take(HASH_HEX / 2) {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0x0f)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles() {
        let k = &MaskKey::new(b"key");
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
        assert_ne!(
            a,
            Style::Hash
                .apply(&MaskKey::new(b"other"), b"alice")
                .unwrap()
        );
        assert_eq!(a.len(), 2 + HASH_HEX);
        // HMAC-SHA256("key", "alice"), its first 96 bits in hex: the precomputed key state
        // hashes exactly as a fresh HMAC does.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"key").unwrap();
        mac.update(b"alice");
        let want: String = mac.finalize().into_bytes()[..HASH_HEX / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(String::from_utf8(a.clone()).unwrap(), format!("h:{want}"));
        // A long key (hashed down by HMAC) and an empty one both work.
        let long = MaskKey::new(&[7u8; 200]);
        assert_ne!(Style::Hash.apply(&long, b"alice").unwrap(), a);
        assert_eq!(
            Style::Hash.apply(&MaskKey::new(b""), b"x").unwrap().len(),
            2 + HASH_HEX
        );
        assert!(!String::from_utf8(a).unwrap().contains("alice"));
    }
}
