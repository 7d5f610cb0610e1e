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
        self.mask(key, value).map(|m| m.to_vec())
    }

    /// The masked form of `value` without allocating (`None` is NULL): what a gateway writes
    /// for every masked value of a result, row after row.
    pub fn mask<'v>(self, key: &MaskKey, value: &'v [u8]) -> Option<Masked<'v>> {
        let redacted = |tail| Masked {
            head: Head::Redacted,
            tail,
        };
        match self {
            Style::Redact => Some(redacted(&[])),
            Style::Partial { keep } => Some(redacted(partial_tail(value, keep))),
            Style::Hash => Some(Masked {
                head: Head::Hash(hash(key, value)),
                tail: &[],
            }),
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

/// A masked value: a head (the redaction mark, or a hash) and a tail borrowed from the value
/// (what `partial` keeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Masked<'v> {
    head: Head,
    tail: &'v [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Head {
    Redacted,
    Hash([u8; HASH_LEN]),
}

impl Masked<'_> {
    /// The bytes, in two pieces to write one after the other.
    pub fn parts(&self) -> [&[u8]; 2] {
        let head: &[u8] = match &self.head {
            Head::Redacted => REDACTED.as_bytes(),
            Head::Hash(h) => h,
        };
        [head, self.tail]
    }

    /// Length in bytes; never zero (every head is text).
    pub fn len(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().concat()
    }
}

/// The last `keep` characters of `value`, or nothing when the value has `keep` characters or
/// fewer, or is not UTF-8.
fn partial_tail(value: &[u8], keep: usize) -> &[u8] {
    let Ok(text) = std::str::from_utf8(value) else {
        return &[];
    };
    let count = text.chars().count();
    if count <= keep {
        return &[];
    }
    let start = text
        .char_indices()
        .nth(count - keep)
        .map_or(text.len(), |(i, _)| i);
    text.get(start..).unwrap_or("").as_bytes()
}

/// `h:` and the first [`HASH_HEX`] hex digits of the value's HMAC.
const HASH_LEN: usize = 2 + HASH_HEX;
// Two digits a byte, from a 32-byte digest.
const _: () = assert!(HASH_HEX.is_multiple_of(2) && HASH_HEX / 2 <= 32);

fn hash(key: &MaskKey, value: &[u8]) -> [u8; HASH_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut mac = key.0.clone();
    mac.update(value);
    let digest = mac.finalize().into_bytes();
    let mut out = [0u8; HASH_LEN];
    out[..2].copy_from_slice(b"h:");
    for (pair, byte) in out[2..].chunks_exact_mut(2).zip(digest.iter()) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_values_come_in_two_borrowed_parts() {
        let k = &MaskKey::new(b"key");
        let m = Style::Partial { keep: 4 }
            .mask(k, b"4111111111111111")
            .unwrap();
        assert_eq!(m.parts(), [&b"****"[..], &b"1111"[..]]);
        assert_eq!((m.len(), m.is_empty()), (8, false));
        let h = Style::Hash.mask(k, b"alice").unwrap();
        assert_eq!(h.parts()[1], b"");
        assert_eq!(h.len(), 2 + HASH_HEX);
        assert_eq!(Style::Redact.mask(k, b"x").unwrap().to_vec(), b"****");
        assert_eq!(Style::Null.mask(k, b"x"), None);
    }

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
