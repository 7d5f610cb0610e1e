//! Content detectors: find sensitive values *inside* a text value.
//!
//! Values arrive as PostgreSQL text output, so a value may be a bare scalar, JSON text, a CSV
//! line or free text holding several matches. [`Detectors::find`] returns the byte ranges that
//! hold sensitive content; [`Detectors::may_match`] is a cheap pre-check for the hot path that
//! rejects most values (numbers, short words, dates) with one pass over the bytes and no
//! allocation.
//!
//! All scanning is hand-written (no regex, no lookaround needed): every detector anchors on an
//! ASCII byte and checks its boundaries explicitly, so a match is never a fragment of a longer
//! alphanumeric token where that would be a false positive. Every range starts and ends next to
//! an ASCII byte (or at the end of the text), so it always lies on `char` boundaries, whatever
//! non-ASCII text surrounds it.
//!
//! What each [`Detector`] finds, and what it deliberately does not, is documented on its variant.
//! Overall policy: where a shape is unambiguous we lean towards masking (fail closed); where a
//! shape is shared with everyday data (integers, dates, times, versions, UUIDs) we require the
//! structure or checksum that tells them apart.
//!
//! Known false positives: 13–19 digit integers starting with 2–6 that happen to pass Luhn (one
//! in ten); any 4-part dotted quad, including a four-part version number standing alone
//! (`1.2.3.4`); short compressed IPv6 look-alikes such as the slice `x[1::2]`; a `+` followed
//! by 8–15 grouped digits; trailing digit groups absorbed into a phone number
//! (`+1 415 555 2671 42`); digit-only values of 16+ characters after a `token`/`secret`
//! label (`tokens: 1234567890123456`); uppercase tokens of 15–34 characters with an unknown
//! country code that pass mod-97 by chance (about one in a hundred).
//! Known false negatives: see each variant ("Not detected").

use std::ops::Range;

/// A kind of sensitive content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// `local@domain.tld`. Local part: letters, digits and `. _ % + -`; domain: at least two
    /// labels of letters, digits and `-`, the last (the TLD) at least two letters. Non-ASCII
    /// letters and digits are accepted in both parts (internationalised addresses such as
    /// `zoë@exämple.com` are detected). Not detected: quoted local parts, IP-literal domains
    /// (`a@[10.0.0.1]`, though the IP itself is), single-label domains (`root@localhost`).
    Email,
    /// Telephone numbers: E.164 (`+` and 8–15 digits, optionally grouped by single spaces,
    /// dashes, dots or a parenthesised group such as `+44 (0) 20 7946 0958`); North-American
    /// `(415) 555-2671`, `415-555-2671`, `415.555.2671`, `415 555 2671` (the space form only with
    /// area and exchange codes starting 2–9), optionally with a leading `1` (`1-800-555-0199`);
    /// national numbers with a trunk `0` and space or dash groups of 10–11 digits
    /// (`020 7946 0958`, `06 12 34 56 78`). Not detected: bare digit runs without `+`
    /// (indistinguishable from integers), the `00` international prefix, extensions, dates,
    /// times, IP addresses. A card number always wins over a phone number on the same digits.
    Phone,
    /// Payment card numbers: 13–19 digits, bare or grouped by single spaces or dashes (first
    /// group of 4 digits, further groups of 3–6), passing the Luhn check, starting with 2–6 (the
    /// major industry identifiers of Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay,
    /// Maestro), and not all one digit. Not detected: numbers starting with 0, 1, 7, 8 or 9
    /// (which keeps most large integer ids out), digits glued to letters or decimals.
    CardNumber,
    /// US social security numbers written `AAA-GG-SSSS` with dashes, excluding area 000, 666 and
    /// 900–999, group 00 and serial 0000. Nine bare digits are *not* detected, even when they
    /// are the whole value: that shape is every 9-digit integer; mask SSN columns by column.
    UsSsn,
    /// IBANs (ISO 13616): two uppercase letters, two check digits and the BBAN, compact or in
    /// groups of four separated by single spaces, validated with mod-97 and, for the countries
    /// in the length table (all SEPA members and more), the exact national length; other
    /// country codes are accepted on the checksum with a length of 15–34. Not detected:
    /// lowercase IBANs, other groupings.
    Iban,
    /// IPv4 dotted quads, each octet 0–255 (leading zeros allowed), not part of a longer dotted
    /// or alphanumeric run (`1.2.3.4.5`, `v1.2.3.4` and `10.0.0.1.2` are not matched).
    Ipv4,
    /// IPv6 addresses, full or compressed, optionally ending in an embedded IPv4
    /// (`::ffff:192.0.2.1`); validated: at most one `::`, 8 groups (fewer only with `::`), groups
    /// of 1–4 hex digits. Not detected: zone ids (`%eth0` is left out of the range), `::` alone.
    /// Times (`12:30:45`) and MAC addresses do not validate.
    Ipv6,
    /// JSON Web Tokens: three base64url segments separated by dots, the first starting with
    /// `eyJ`, header and payload of at least 10 characters; the signature may be empty
    /// (`alg: none`); further dot-separated segments (JWE) are included.
    Jwt,
    /// Cloud credentials: AWS access key ids (`AKIA`, `ASIA`, `AGPA`, `AIDA`, `AROA`, `ANPA`,
    /// `ANVA`, `AIPA` + 16 uppercase letters or digits); AWS secret access keys (40 base64
    /// characters) only after a label such as `aws_secret_access_key =` or
    /// `"SecretAccessKey": "`; Google API keys (`AIza` + 35 of `[0-9A-Za-z_-]`); a GCP service
    /// account's `"private_key_id": "<40 hex>"`; Azure `AccountKey=` / `SharedAccessKey=` with at
    /// least 40 base64 characters. For labelled forms the range is the value only.
    CloudKey,
    /// API keys of well-known prefixed shapes (token bodies of at most 256 characters): GitHub
    /// (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + at least 36 letters or digits; `github_pat_` +
    /// at least 82 of `[A-Za-z0-9_]`), Slack (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-` + at
    /// least 10 of `[A-Za-z0-9-]`), Stripe (`sk_live_`, `rk_live_`, `sk_test_`, `rk_test_` + at
    /// least 16 letters or digits), OpenAI-like (`sk-` + at least 32 of `[A-Za-z0-9_-]`, which
    /// also covers `sk-proj-` and `sk-ant-` keys); and labelled secrets: a key whose
    /// name contains `api_key`/`apikey`/`api-key`, `secret`, `token`, `password` or `passwd`
    /// (case-insensitive, so `client_secret`, `DB_PASSWORD`, `"accessToken"` count), then `=`,
    /// `:` or `=>` (quotes and JSON style allowed), then a value of at least 16 characters of
    /// `[A-Za-z0-9_\-+/=.]`; the range is the value only. Not detected: values with spaces or
    /// other punctuation (`password = "correct horse"`), unlabelled high-entropy strings.
    ApiKey,
    /// PEM private keys: `-----BEGIN <label>-----` … `-----END <label>-----` where the label
    /// contains `PRIVATE KEY` (RSA, EC, DSA, OPENSSH, ENCRYPTED, plain PKCS#8, PGP … BLOCK);
    /// the range is the whole block. A BEGIN without a matching END runs to the end of the text
    /// (fail closed). Certificates and public keys are not detected.
    PrivateKey,
}

impl Detector {
    /// Every detector, in declaration order.
    pub const ALL: [Detector; 11] = [
        Detector::Email,
        Detector::Phone,
        Detector::CardNumber,
        Detector::UsSsn,
        Detector::Iban,
        Detector::Ipv4,
        Detector::Ipv6,
        Detector::Jwt,
        Detector::CloudKey,
        Detector::ApiKey,
        Detector::PrivateKey,
    ];

    /// Policy-file name: "email", "phone", "card_number", "us_ssn", "iban", "ipv4", "ipv6",
    /// "jwt", "cloud_key", "api_key", "private_key".
    pub fn name(self) -> &'static str {
        match self {
            Detector::Email => "email",
            Detector::Phone => "phone",
            Detector::CardNumber => "card_number",
            Detector::UsSsn => "us_ssn",
            Detector::Iban => "iban",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::Jwt => "jwt",
            Detector::CloudKey => "cloud_key",
            Detector::ApiKey => "api_key",
            Detector::PrivateKey => "private_key",
        }
    }

    /// The detector with this policy-file name (exact, lowercase), if any.
    pub fn from_name(s: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == s)
    }

    fn bit(self) -> u16 {
        1u16 << (self as u16)
    }

    /// Which detector is kept when ranges starting at the same byte are merged: the most
    /// specific shape first.
    fn rank(self) -> u8 {
        match self {
            Detector::PrivateKey => 0,
            Detector::Jwt => 1,
            Detector::CloudKey => 2,
            Detector::ApiKey => 3,
            Detector::CardNumber => 4,
            Detector::Iban => 5,
            Detector::UsSsn => 6,
            Detector::Email => 7,
            Detector::Ipv6 => 8,
            Detector::Ipv4 => 9,
            Detector::Phone => 10,
        }
    }
}

/// One finding: the detector and the byte range of the text it covers.
type Found = (Detector, Range<usize>);

/// A compiled set of detectors; build once, share (Send + Sync), scan many values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Detectors {
    enabled: u16,
}

impl Detectors {
    /// A set holding the given detectors (duplicates are harmless).
    pub fn new(enabled: &[Detector]) -> Detectors {
        Detectors {
            enabled: enabled.iter().fold(0, |acc, d| acc | d.bit()),
        }
    }

    /// True when no detector is enabled: `find` always returns nothing.
    pub fn is_empty(&self) -> bool {
        self.enabled == 0
    }

    fn has(&self, d: Detector) -> bool {
        self.enabled & d.bit() != 0
    }

    /// Byte ranges of `text` holding sensitive content, sorted by start, non-overlapping (merge
    /// overlaps; when merged, keep the first detector), each with its detector.
    ///
    /// "First" is the range that starts first; among ranges starting at the same byte, the most
    /// specific detector wins (private key, JWT, cloud key, API key, card, IBAN, SSN, email,
    /// IPv6, IPv4, phone). Phone findings overlapping a card number are dropped.
    pub fn find(&self, text: &str) -> Vec<(Detector, Range<usize>)> {
        self.find_with(text, true)
    }

    /// Cheap pre-check: false means `find` would return nothing. Must never return false when
    /// find would find something.
    pub fn may_match(&self, bytes: &[u8]) -> bool {
        if self.is_empty() {
            return false;
        }
        let stats = Stats::of(bytes);
        Detector::ALL
            .into_iter()
            .any(|d| self.has(d) && stats.may_match(d, bytes))
    }

    fn find_with(&self, text: &str, prefilter: bool) -> Vec<Found> {
        let mut found = Vec::new();
        if self.is_empty() {
            return found;
        }
        let b = text.as_bytes();
        let stats = prefilter.then(|| Stats::of(b));
        let want = |d: Detector| self.has(d) && stats.as_ref().is_none_or(|s| s.may_match(d, b));
        if want(Detector::PrivateKey) {
            scan_pem(text, &mut found);
        }
        if want(Detector::Jwt) {
            scan_jwt(text, &mut found);
        }
        let cloud = want(Detector::CloudKey);
        let api = want(Detector::ApiKey);
        if cloud || api {
            scan_prefixed(b, cloud, api, &mut found);
            scan_labelled(b, cloud, api, &mut found);
        }
        if want(Detector::CardNumber) {
            scan_cards(b, &mut found);
        }
        if want(Detector::Iban) {
            scan_iban(b, &mut found);
        }
        if want(Detector::UsSsn) {
            scan_ssn(b, &mut found);
        }
        if want(Detector::Email) {
            scan_email(text, &mut found);
        }
        if want(Detector::Ipv6) {
            scan_ipv6(b, &mut found);
        }
        if want(Detector::Ipv4) {
            scan_ipv4(b, &mut found);
        }
        if want(Detector::Phone) {
            scan_phones(b, &mut found);
        }
        finish(found)
    }
}

/// Drops phones overlapping cards, sorts, and merges overlapping ranges.
fn finish(mut found: Vec<Found>) -> Vec<Found> {
    if found.len() <= 1 {
        return found;
    }
    let cards: Vec<Range<usize>> = found
        .iter()
        .filter(|(d, _)| *d == Detector::CardNumber)
        .map(|(_, r)| r.clone())
        .collect();
    if !cards.is_empty() {
        found.retain(|(d, r)| {
            *d != Detector::Phone || !cards.iter().any(|c| c.start < r.end && r.start < c.end)
        });
    }
    found.sort_by(|(da, ra), (db, rb)| {
        ra.start
            .cmp(&rb.start)
            .then(da.rank().cmp(&db.rank()))
            .then(rb.end.cmp(&ra.end))
    });
    let mut out: Vec<Found> = Vec::with_capacity(found.len());
    for (d, r) in found {
        if r.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((_, last)) if r.start < last.end => last.end = last.end.max(r.end),
            _ => out.push((d, r)),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Pre-check

/// Byte-class counts from one pass over a value, enough to rule detectors out.
#[derive(Default)]
struct Stats {
    len: usize,
    digits: usize,
    upper: usize,
    dots: usize,
    colons: usize,
    dashes: usize,
    at: bool,
    plus: bool,
    space: bool,
    paren: bool,
    eq: bool,
    underscore: bool,
    upper_a: bool,
}

impl Stats {
    fn of(bytes: &[u8]) -> Stats {
        let mut s = Stats {
            len: bytes.len(),
            ..Stats::default()
        };
        for &c in bytes {
            match c {
                b'0'..=b'9' => s.digits += 1,
                b'A' => {
                    s.upper += 1;
                    s.upper_a = true;
                }
                b'B'..=b'Z' => s.upper += 1,
                b'.' => s.dots += 1,
                b':' => s.colons += 1,
                b'-' => s.dashes += 1,
                b'@' => s.at = true,
                b'+' => s.plus = true,
                b' ' => s.space = true,
                b'(' => s.paren = true,
                b'=' => s.eq = true,
                b'_' => s.underscore = true,
                _ => {}
            }
        }
        s
    }

    /// Necessary conditions for each detector to find anything (derived from its grammar).
    fn may_match(&self, d: Detector, bytes: &[u8]) -> bool {
        match d {
            // local@d.tl
            Detector::Email => self.at && self.len >= 6,
            // "+" and 8 digits, or 10 digits with a separator.
            Detector::Phone => {
                (self.plus && self.digits >= 8)
                    || (self.digits >= 10
                        && (self.dashes > 0 || self.dots > 0 || self.space || self.paren))
            }
            Detector::CardNumber => self.digits >= 13,
            Detector::UsSsn => self.digits >= 9 && self.dashes >= 2,
            Detector::Iban => self.len >= 15 && self.upper >= 2 && self.digits >= 2,
            Detector::Ipv4 => self.dots >= 3 && self.digits >= 4,
            // Either "::" or exactly seven single colons.
            Detector::Ipv6 => self.colons >= 7 || (self.colons >= 2 && contains(bytes, b"::")),
            Detector::Jwt => self.dots >= 2 && self.len >= 22 && contains(bytes, b"eyJ"),
            // Prefixed ids start with 'A'; labelled forms need '=' or ':'.
            Detector::CloudKey => self.len >= 20 && (self.upper_a || self.eq || self.colons > 0),
            // Prefixes contain '_' or '-'; labelled forms need '=' or ':'.
            Detector::ApiKey => {
                self.len >= 15 && (self.underscore || self.dashes > 0 || self.eq || self.colons > 0)
            }
            Detector::PrivateKey => self.dashes >= 10 && contains(bytes, b"-----BEGIN "),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Byte helpers. `at` reads 0 past either end, which no predicate below accepts.

fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

/// The byte `n` positions before `i` (0 when that is before the start).
fn before(b: &[u8], i: usize, n: usize) -> u8 {
    i.checked_sub(n).map_or(0, |j| at(b, j))
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

/// First index at or after `i` whose byte does not satisfy `pred`.
fn run_end(b: &[u8], i: usize, pred: impl Fn(u8) -> bool) -> usize {
    run_end_within(b, i, b.len(), pred)
}

/// Like [`run_end`], but stops at `limit`.
fn run_end_within(b: &[u8], i: usize, limit: usize, pred: impl Fn(u8) -> bool) -> usize {
    let limit = limit.min(b.len());
    let mut j = i;
    while j < limit && pred(at(b, j)) {
        j += 1;
    }
    j
}

fn digits_end(b: &[u8], i: usize) -> usize {
    run_end(b, i, is_digit)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Byte length of `r` (0 when reversed).
fn len_of(r: (usize, usize)) -> usize {
    r.1.saturating_sub(r.0)
}

/// Numeric value of a short digit slice (saturating).
fn number(b: &[u8], s: usize, e: usize) -> u32 {
    b.get(s..e).unwrap_or(&[]).iter().fold(0u32, |acc, &c| {
        acc.saturating_mul(10)
            .saturating_add(u32::from(c.wrapping_sub(b'0')))
    })
}

/// A digit run may start a number: not glued to a word, a decimal point or a hyphenated token.
fn num_start_ok(b: &[u8], i: usize) -> bool {
    let p = before(b, i, 1);
    let pp = before(b, i, 2);
    !(is_word(p) || (p == b'.' && is_digit(pp)) || (p == b'-' && is_word(pp)))
}

/// A number may end at `e`: not glued to a word or followed by decimals.
fn num_end_ok(b: &[u8], e: usize) -> bool {
    let c = at(b, e);
    !(is_word(c) || (c == b'.' && is_digit(at(b, e + 1))))
}

// ---------------------------------------------------------------------------------------------
// Card numbers

const MAX_GROUPS: usize = 8;

fn scan_cards(b: &[u8], out: &mut Vec<Found>) {
    let mut i = 0;
    while i < b.len() {
        if !is_digit(at(b, i)) {
            i += 1;
            continue;
        }
        let (next, end) = card_at(b, i);
        match end {
            Some(e) => {
                out.push((Detector::CardNumber, i..e));
                i = e;
            }
            None => i = next.max(i + 1),
        }
    }
}

/// Tries a card starting at digit `start`: `(where to resume, Some(end) on a match)`.
fn card_at(b: &[u8], start: usize) -> (usize, Option<usize>) {
    let first_end = digits_end(b, start);
    if !num_start_ok(b, start) {
        return (first_end, None);
    }
    let mut groups = [(0usize, 0usize); MAX_GROUPS];
    let mut n = 0;
    if let Some(g) = groups.get_mut(n) {
        *g = (start, first_end);
        n += 1;
    }
    let sep = at(b, first_end);
    let mut total = len_of((start, first_end));
    if sep == b' ' || sep == b'-' {
        let mut pos = first_end;
        while total <= 19 && at(b, pos) == sep && is_digit(at(b, pos + 1)) {
            let e = digits_end(b, pos + 1);
            let Some(g) = groups.get_mut(n) else { break };
            *g = (pos + 1, e);
            n += 1;
            total += len_of((pos + 1, e));
            pos = e;
        }
    }
    let groups = groups.get(..n).unwrap_or(&[]);
    for k in (1..=n).rev() {
        let Some(used) = groups.get(..k) else {
            continue;
        };
        let len: usize = used.iter().map(|&g| len_of(g)).sum();
        if !(13..=19).contains(&len) {
            continue;
        }
        if k > 1 {
            let first_ok = used.first().is_some_and(|&g| len_of(g) == 4);
            let rest_ok = used.iter().skip(1).all(|&g| (3..=6).contains(&len_of(g)));
            if !first_ok || !rest_ok {
                continue;
            }
        }
        // A dash-joined run is one token: only the whole of it can be a card.
        if k < n && sep != b' ' {
            continue;
        }
        let end = used.last().map_or(start, |g| g.1);
        if k == n && !num_end_ok(b, end) {
            continue;
        }
        let mut digits = [0u8; 19];
        let mut m = 0;
        for &c in used
            .iter()
            .flat_map(|&(s, e)| b.get(s..e).unwrap_or(&[]).iter())
        {
            if let Some(slot) = digits.get_mut(m) {
                *slot = c.wrapping_sub(b'0');
                m += 1;
            }
        }
        if valid_card(digits.get(..m).unwrap_or(&[])) {
            return (end, Some(end));
        }
    }
    let resume = if n > 1 && sep == b' ' {
        groups.get(1).map_or(first_end, |g| g.0)
    } else {
        groups.last().map_or(first_end, |g| g.1)
    };
    (resume, None)
}

fn valid_card(digits: &[u8]) -> bool {
    let Some(&first) = digits.first() else {
        return false;
    };
    (2..=6).contains(&first) && digits.iter().any(|&d| d != first) && luhn(digits)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let d = u32::from(d);
            if k % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

// ---------------------------------------------------------------------------------------------
// Phone numbers

fn scan_phones(b: &[u8], out: &mut Vec<Found>) {
    let mut i = 0;
    while i < b.len() {
        let c = at(b, i);
        if !(c == b'+' || c == b'(' || is_digit(c)) {
            i += 1;
            continue;
        }
        let end = if phone_start_ok(b, i) {
            if c == b'+' {
                phone_plus(b, i)
            } else {
                phone_nanp(b, i).or_else(|| phone_trunk(b, i))
            }
        } else {
            None
        };
        match end {
            Some(e) => {
                out.push((Detector::Phone, i..e));
                i = e;
            }
            None if is_digit(c) => i = digits_end(b, i),
            None => i += 1,
        }
    }
}

fn phone_start_ok(b: &[u8], i: usize) -> bool {
    let p = before(b, i, 1);
    if is_word(p) || (p == b'+' && is_digit(at(b, i))) {
        return false;
    }
    !(matches!(p, b'.' | b'-' | b'/') && is_word(before(b, i, 2)))
}

/// `+` then digit groups (single space, dash or dot between; parenthesised groups allowed),
/// 8–15 digits in all.
fn phone_plus(b: &[u8], i: usize) -> Option<usize> {
    let mut p = i + 1;
    if !is_digit(at(b, p)) || iso_date_at(b, p) {
        return None;
    }
    let mut digits = 0usize;
    let mut end = p;
    loop {
        let c = at(b, p);
        if c == b'(' {
            let s = p + 1;
            let e = digits_end(b, s);
            if !(1..=4).contains(&len_of((s, e))) || at(b, e) != b')' {
                break;
            }
            digits += len_of((s, e));
            p = e + 1;
            end = p;
        } else if is_digit(c) {
            let e = digits_end(b, p);
            digits += len_of((p, e));
            p = e;
            end = p;
        } else {
            break;
        }
        if digits > 15 {
            return None;
        }
        let c = at(b, p);
        let n = at(b, p + 1);
        if matches!(c, b' ' | b'-' | b'.') && (is_digit(n) || n == b'(') {
            p += 1;
        } else if !(c == b'(' || (before(b, p, 1) == b')' && is_digit(c))) {
            break;
        }
    }
    if !(8..=15).contains(&digits) || is_word(at(b, end)) {
        return None;
    }
    Some(end)
}

/// `dddd-dd-dd` not followed by another digit.
fn iso_date_at(b: &[u8], p: usize) -> bool {
    let shape = b"0000-00-00";
    shape.iter().enumerate().all(|(k, &c)| {
        let x = at(b, p + k);
        if c == b'0' { is_digit(x) } else { x == c }
    }) && !is_digit(at(b, p + shape.len()))
}

/// North-American numbers: `[1 sep] (ddd) ddd-dddd` or `[1 sep] ddd-ddd-dddd` (one separator
/// kind among `-`, `.`, space).
fn phone_nanp(b: &[u8], i: usize) -> Option<usize> {
    let mut p = i;
    if at(b, p) == b'1'
        && matches!(at(b, p + 1), b' ' | b'-' | b'.')
        && (is_digit(at(b, p + 2)) || at(b, p + 2) == b'(')
    {
        p += 2;
    }
    let group = |p: usize, len: usize| -> Option<usize> {
        let e = digits_end(b, p);
        (len_of((p, e)) == len).then_some(e)
    };
    let sep;
    if at(b, p) == b'(' {
        p = group(p + 1, 3)?;
        if at(b, p) != b')' {
            return None;
        }
        p += 1;
        if matches!(at(b, p), b' ' | b'-' | b'.') {
            p += 1;
        }
        p = group(p, 3)?;
        sep = at(b, p);
        if !matches!(sep, b' ' | b'-' | b'.') {
            return None;
        }
        p = group(p + 1, 4)?;
    } else {
        let area = p;
        p = group(p, 3)?;
        sep = at(b, p);
        if !matches!(sep, b' ' | b'-' | b'.') {
            return None;
        }
        // Space-separated digit groups are common in text: require real NANP area and
        // exchange codes (first digit 2-9) there.
        let nxx = |q: usize| matches!(at(b, q), b'2'..=b'9');
        if sep == b' ' && !(nxx(area) && nxx(p + 1)) {
            return None;
        }
        p = group(p + 1, 3)?;
        if at(b, p) != sep {
            return None;
        }
        p = group(p + 1, 4)?;
    }
    let c = at(b, p);
    let longer = is_word(c)
        || (matches!(c, b'-' | b'.' | b'/' | b':') && is_digit(at(b, p + 1)))
        || (sep == b' ' && c == b' ' && is_digit(at(b, p + 1)))
        || (sep == b' ' && before(b, i, 1) == b' ' && is_digit(before(b, i, 2)));
    (!longer).then_some(p)
}

/// National numbers with a trunk prefix: `0` + non-zero digit first group (2–5 digits, may be
/// parenthesised), further groups of 2–8 digits split by one kind of separator (space or
/// dash), 10–11 digits in all.
fn phone_trunk(b: &[u8], i: usize) -> Option<usize> {
    let mut p = i;
    let paren = at(b, p) == b'(';
    if paren {
        p += 1;
    }
    if at(b, p) != b'0' || !matches!(at(b, p + 1), b'1'..=b'9') {
        return None;
    }
    let e = digits_end(b, p);
    let mut digits = len_of((p, e));
    if !(2..=5).contains(&digits) {
        return None;
    }
    p = e;
    let mut need_sep = true;
    if paren {
        if at(b, p) != b')' {
            return None;
        }
        p += 1;
        if at(b, p) == b' ' {
            p += 1;
        }
        need_sep = false;
    }
    let mut sep: Option<u8> = None;
    let mut groups = 1;
    // Lengths of the first three groups (index 1..=3).
    let mut lens = [0usize; 4];
    if let Some(slot) = lens.get_mut(1) {
        *slot = digits;
    }
    let mut end = p;
    loop {
        let mut q = p;
        if need_sep {
            let c = at(b, q);
            if !matches!(c, b' ' | b'-') || !is_digit(at(b, q + 1)) || sep.is_some_and(|s| s != c) {
                break;
            }
            sep = Some(c);
            q += 1;
        }
        need_sep = true;
        let e = digits_end(b, q);
        let len = len_of((q, e));
        if !(2..=8).contains(&len) || digits + len > 11 {
            break;
        }
        digits += len;
        groups += 1;
        if let Some(slot) = lens.get_mut(groups) {
            *slot = len;
        }
        p = e;
        end = e;
    }
    // "01 02 2024 10" reads as a date, not a phone number.
    let date_like = lens == [0, 2, 2, 4];
    let c = at(b, end);
    let bad = groups < 2
        || date_like
        || !(10..=11).contains(&digits)
        || is_word(c)
        || (matches!(c, b'-' | b'.' | b'/' | b':') && is_digit(at(b, end + 1)))
        || (sep == Some(b' ') && before(b, i, 1) == b' ' && is_digit(before(b, i, 2)));
    (!bad).then_some(end)
}

// ---------------------------------------------------------------------------------------------
// US SSN

fn scan_ssn(b: &[u8], out: &mut Vec<Found>) {
    let mut i = 0;
    while i < b.len() {
        if !is_digit(at(b, i)) {
            i += 1;
            continue;
        }
        let e1 = digits_end(b, i);
        if let Some(end) = ssn_at(b, i, e1) {
            out.push((Detector::UsSsn, i..end));
            i = end;
        } else {
            i = e1;
        }
    }
}

fn ssn_at(b: &[u8], i: usize, e1: usize) -> Option<usize> {
    if len_of((i, e1)) != 3 || at(b, e1) != b'-' || !num_start_ok(b, i) {
        return None;
    }
    let e2 = digits_end(b, e1 + 1);
    if len_of((e1 + 1, e2)) != 2 || at(b, e2) != b'-' {
        return None;
    }
    let e3 = digits_end(b, e2 + 1);
    if len_of((e2 + 1, e3)) != 4 {
        return None;
    }
    let c = at(b, e3);
    if !num_end_ok(b, e3) || (matches!(c, b'-' | b'.') && is_word(at(b, e3 + 1))) {
        return None;
    }
    let area = number(b, i, e1);
    let group = number(b, e1 + 1, e2);
    let serial = number(b, e2 + 1, e3);
    let ok = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    ok.then_some(e3)
}

// ---------------------------------------------------------------------------------------------
// IBAN

/// National IBAN lengths (ISO 13616 registry) for SEPA members and a few neighbours.
fn iban_length(cc: [u8; 2]) -> Option<usize> {
    Some(match &cc {
        b"NO" => 15,
        b"BE" => 16,
        b"DK" | b"FI" | b"NL" => 18,
        b"SI" => 19,
        b"AT" | b"EE" | b"LT" | b"LU" => 20,
        b"CH" | b"HR" | b"LI" | b"LV" => 21,
        b"BG" | b"DE" | b"GB" | b"IE" => 22,
        b"CZ" | b"ES" | b"RO" | b"SE" | b"SK" => 24,
        b"PT" => 25,
        b"IS" => 26,
        b"FR" | b"GR" | b"IT" | b"MC" | b"SM" => 27,
        b"CY" | b"HU" | b"PL" => 28,
        b"MT" => 31,
        _ => return None,
    })
}

fn is_iban_char(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

fn scan_iban(b: &[u8], out: &mut Vec<Found>) {
    let mut i = 0;
    while i + 4 <= b.len() {
        let head = at(b, i).is_ascii_uppercase()
            && at(b, i + 1).is_ascii_uppercase()
            && is_digit(at(b, i + 2))
            && is_digit(at(b, i + 3))
            && !is_word(before(b, i, 1));
        if head && let Some(end) = iban_at(b, i) {
            out.push((Detector::Iban, i..end));
            i = end;
            continue;
        }
        i += 1;
    }
}

fn iban_at(b: &[u8], i: usize) -> Option<usize> {
    let (lo, hi) = iban_length([at(b, i), at(b, i + 1)]).map_or((15, 34), |l| (l, l));
    let compact_end = run_end(b, i, is_iban_char);
    let compact_len = len_of((i, compact_end));
    if compact_len > 4 {
        let ok = (lo..=hi).contains(&compact_len)
            && !is_word(at(b, compact_end))
            && b.get(i..compact_end).is_some_and(iban_checksum_ok);
        return ok.then_some(compact_end);
    }
    // Grouped: "CCkk BBBB BBBB ..", groups of four, the last one 1-4 long.
    let mut buf = [0u8; 34];
    let mut count = 0;
    for &c in b.get(i..compact_end).unwrap_or(&[]) {
        if let Some(slot) = buf.get_mut(count) {
            *slot = c;
            count += 1;
        }
    }
    let mut pos = compact_end;
    let mut best = None;
    while at(b, pos) == b' ' && is_iban_char(at(b, pos + 1)) {
        let e = run_end(b, pos + 1, is_iban_char);
        let len = len_of((pos + 1, e));
        if len > 4 || count + len > 34 {
            break;
        }
        for &c in b.get(pos + 1..e).unwrap_or(&[]) {
            if let Some(slot) = buf.get_mut(count) {
                *slot = c;
                count += 1;
            }
        }
        pos = e;
        if (lo..=hi).contains(&count)
            && !is_word(at(b, pos))
            && buf.get(..count).is_some_and(iban_checksum_ok)
        {
            best = Some(pos);
        }
        if len < 4 {
            break;
        }
    }
    best
}

/// ISO 13616 / ISO 7064 mod 97-10: rotate the first four characters to the end, read letters as
/// 10..35, and the remainder must be 1.
fn iban_checksum_ok(s: &[u8]) -> bool {
    let (head, tail) = s.split_at(s.len().min(4));
    let r = tail.iter().chain(head).fold(0u32, |r, &c| {
        if c.is_ascii_digit() {
            (r * 10 + u32::from(c - b'0')) % 97
        } else {
            (r * 100 + u32::from(c.wrapping_sub(b'A')) + 10) % 97
        }
    });
    r == 1
}

// ---------------------------------------------------------------------------------------------
// IP addresses

fn scan_ipv4(b: &[u8], out: &mut Vec<Found>) {
    let mut i = 0;
    while i < b.len() {
        if !is_digit(at(b, i)) {
            i += 1;
            continue;
        }
        let p = before(b, i, 1);
        let found = if is_word(p) || p == b'.' {
            None
        } else {
            ipv4_at(b, i)
        };
        match found {
            Some(e) => {
                out.push((Detector::Ipv4, i..e));
                i = e;
            }
            None => i = digits_end(b, i),
        }
    }
}

/// A dotted quad starting at `i`, not continued by a word or by another `.`-segment.
fn ipv4_at(b: &[u8], i: usize) -> Option<usize> {
    let mut p = i;
    for k in 0..4 {
        if k > 0 {
            if at(b, p) != b'.' {
                return None;
            }
            p += 1;
        }
        let e = digits_end(b, p);
        if !(1..=3).contains(&len_of((p, e))) || number(b, p, e) > 255 {
            return None;
        }
        p = e;
    }
    let c = at(b, p);
    if is_word(c) || (c == b'.' && is_word(at(b, p + 1))) {
        return None;
    }
    Some(p)
}

fn is_v6_char(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

fn scan_ipv6(b: &[u8], out: &mut Vec<Found>) {
    let mut i = 0;
    while i < b.len() {
        if at(b, i) != b':' {
            i += 1;
            continue;
        }
        let mut s = i;
        while s > 0 && is_v6_char(before(b, s, 1)) {
            s -= 1;
        }
        let e = run_end(b, i, is_v6_char);
        if let Some(r) = ipv6_in_run(b, s, e) {
            out.push((Detector::Ipv6, r));
        }
        i = e.max(i + 1);
    }
}

fn ipv6_in_run(b: &[u8], mut s: usize, mut e: usize) -> Option<Range<usize>> {
    while e > s && before(b, e, 1) == b'.' {
        e -= 1;
    }
    while s < e && at(b, s) == b'.' {
        s += 1;
    }
    // A lone leading or trailing colon belongs to the text ("ip:fe80::1", "at ::1:").
    if at(b, s) == b':' && at(b, s + 1) != b':' {
        s += 1;
    }
    if e >= s + 2 && before(b, e, 1) == b':' && before(b, e, 2) != b':' {
        e -= 1;
    }
    if s >= e || is_word(before(b, s, 1)) || is_word(at(b, e)) {
        return None;
    }
    b.get(s..e).is_some_and(valid_ipv6).then_some(s..e)
}

fn valid_ipv6(s: &[u8]) -> bool {
    if !s.iter().any(u8::is_ascii_hexdigit) {
        return false;
    }
    let doubles: Vec<usize> = s
        .windows(2)
        .enumerate()
        .filter(|(_, w)| *w == b"::")
        .map(|(k, _)| k)
        .collect();
    match doubles.as_slice() {
        [] => v6_groups(s, true) == Some(8),
        [k] => {
            let left = s.get(..*k).unwrap_or(&[]);
            let right = s.get(k + 2..).unwrap_or(&[]);
            match (v6_groups(left, false), v6_groups(right, true)) {
                (Some(l), Some(r)) => l + r <= 7,
                _ => false,
            }
        }
        _ => false,
    }
}

/// Number of 16-bit groups in a `:`-separated part, or None when malformed. An embedded IPv4
/// (two groups) is allowed only as the last piece of the address.
fn v6_groups(part: &[u8], v4_tail: bool) -> Option<usize> {
    if part.is_empty() {
        return Some(0);
    }
    let pieces = part.split(|&c| c == b':').count();
    let mut groups = 0;
    for (k, piece) in part.split(|&c| c == b':').enumerate() {
        if piece.contains(&b'.') {
            if !v4_tail || k + 1 != pieces || ipv4_at(piece, 0) != Some(piece.len()) {
                return None;
            }
            groups += 2;
        } else if (1..=4).contains(&piece.len()) && piece.iter().all(u8::is_ascii_hexdigit) {
            groups += 1;
        } else {
            return None;
        }
    }
    Some(groups)
}

// ---------------------------------------------------------------------------------------------
// Email

fn is_local_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '.' | '_' | '%' | '+' | '-')
        || (!c.is_ascii() && c.is_alphanumeric())
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())
}

fn scan_email(text: &str, out: &mut Vec<Found>) {
    for (at_pos, _) in text.match_indices('@') {
        if let Some(r) = email_at(text, at_pos) {
            out.push((Detector::Email, r));
        }
    }
}

fn email_at(text: &str, at_pos: usize) -> Option<Range<usize>> {
    let head = text.get(..at_pos)?;
    let mut start = at_pos;
    for (ci, c) in head.char_indices().rev() {
        if !is_local_char(c) {
            break;
        }
        start = ci;
    }
    let local = text.get(start..at_pos)?.trim_start_matches('.');
    if !local.chars().any(char::is_alphanumeric) {
        return None;
    }
    let start = at_pos.checked_sub(local.len())?;
    let domain_start = at_pos + 1;
    let tail = text.get(domain_start..)?;
    // Walk the labels; remember the end of the longest prefix that has two or more labels and
    // ends in a valid TLD (two or more letters).
    let mut labels = 0usize;
    let mut label_len = 0usize;
    let mut label_alpha = true;
    let mut label_end = 0usize;
    let mut best = None;
    let mut chars = tail.char_indices().peekable();
    loop {
        let next = chars.next();
        match next {
            Some((ci, c)) if is_label_char(c) => {
                label_len += 1;
                label_alpha &= c.is_alphabetic();
                label_end = ci + c.len_utf8();
                continue;
            }
            _ => {}
        }
        // A label ends here.
        if label_len > 0 {
            labels += 1;
            if labels >= 2 && label_len >= 2 && label_alpha {
                best = Some(label_end);
            }
        }
        match next {
            Some((_, '.'))
                if label_len > 0 && chars.peek().is_some_and(|&(_, c)| is_label_char(c)) =>
            {
                label_len = 0;
                label_alpha = true;
            }
            _ => break,
        }
    }
    best.map(|e| start..domain_start + e)
}

// ---------------------------------------------------------------------------------------------
// JWT

fn is_b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn scan_jwt(text: &str, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(off) = text.get(from..).and_then(|t| t.find("eyJ")) {
        let i = from + off;
        match jwt_at(b, i) {
            Some(e) => {
                out.push((Detector::Jwt, i..e));
                from = e;
            }
            None => from = i + 3,
        }
    }
}

fn jwt_at(b: &[u8], i: usize) -> Option<usize> {
    if is_b64url(before(b, i, 1)) {
        return None;
    }
    let e1 = run_end(b, i, is_b64url);
    if len_of((i, e1)) < 10 || at(b, e1) != b'.' {
        return None;
    }
    let e2 = run_end(b, e1 + 1, is_b64url);
    if len_of((e1 + 1, e2)) < 10 || at(b, e2) != b'.' {
        return None;
    }
    let mut end = run_end(b, e2 + 1, is_b64url);
    while at(b, end) == b'.' && is_b64url(at(b, end + 1)) {
        end = run_end(b, end + 1, is_b64url);
    }
    Some(end)
}

// ---------------------------------------------------------------------------------------------
// PEM private keys

fn scan_pem(text: &str, out: &mut Vec<Found>) {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(off) = text.get(from..).and_then(|t| t.find("-----BEGIN ")) {
        let i = from + off;
        let label_start = i + "-----BEGIN ".len();
        match pem_label(b, label_start) {
            Some(h) => {
                let end = pem_end(text, h).unwrap_or(text.len());
                out.push((Detector::PrivateKey, i..end));
                from = end;
            }
            None => from = label_start,
        }
    }
}

/// A private-key label at `s` (`[A-Z0-9 ]*` containing `PRIVATE KEY`, then `-----`): the index
/// after the closing dashes.
fn pem_label(b: &[u8], s: usize) -> Option<usize> {
    let e = run_end(b, s, |c| {
        c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
    });
    let label = b.get(s..e)?;
    (b.get(e..e + 5)? == b"-----" && contains(label, b"PRIVATE KEY")).then_some(e + 5)
}

fn pem_end(text: &str, from: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = from;
    while let Some(off) = text.get(from..).and_then(|t| t.find("-----END ")) {
        let label_start = from + off + "-----END ".len();
        if let Some(e) = pem_label(b, label_start) {
            return Some(e);
        }
        from = label_start;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Prefixed cloud and API keys

struct Shape {
    prefix: &'static [u8],
    detector: Detector,
    body: fn(u8) -> bool,
    min: usize,
    max: usize,
}

fn upper_alnum(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}

fn alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

fn alnum_dash(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-'
}

/// Longest prefixed API token accepted.
const MAX_TOKEN: usize = 256;

const SHAPES: &[Shape] = &[
    Shape::cloud(b"AKIA", upper_alnum, 16, 16),
    Shape::cloud(b"ASIA", upper_alnum, 16, 16),
    Shape::cloud(b"AGPA", upper_alnum, 16, 16),
    Shape::cloud(b"AIDA", upper_alnum, 16, 16),
    Shape::cloud(b"AROA", upper_alnum, 16, 16),
    Shape::cloud(b"ANPA", upper_alnum, 16, 16),
    Shape::cloud(b"ANVA", upper_alnum, 16, 16),
    Shape::cloud(b"AIPA", upper_alnum, 16, 16),
    Shape::cloud(b"AIza", is_b64url, 35, 35),
    Shape::api(b"ghp_", alnum, 36),
    Shape::api(b"gho_", alnum, 36),
    Shape::api(b"ghu_", alnum, 36),
    Shape::api(b"ghs_", alnum, 36),
    Shape::api(b"ghr_", alnum, 36),
    Shape::api(b"github_pat_", is_word, 82),
    Shape::api(b"xoxb-", alnum_dash, 10),
    Shape::api(b"xoxp-", alnum_dash, 10),
    Shape::api(b"xoxa-", alnum_dash, 10),
    Shape::api(b"xoxr-", alnum_dash, 10),
    Shape::api(b"xoxs-", alnum_dash, 10),
    Shape::api(b"sk_live_", alnum, 16),
    Shape::api(b"rk_live_", alnum, 16),
    Shape::api(b"sk_test_", alnum, 16),
    Shape::api(b"rk_test_", alnum, 16),
    Shape::api(b"sk-", is_b64url, 32),
];

impl Shape {
    const fn cloud(prefix: &'static [u8], body: fn(u8) -> bool, min: usize, max: usize) -> Shape {
        Shape {
            prefix,
            detector: Detector::CloudKey,
            body,
            min,
            max,
        }
    }

    const fn api(prefix: &'static [u8], body: fn(u8) -> bool, min: usize) -> Shape {
        Shape {
            prefix,
            detector: Detector::ApiKey,
            body,
            min,
            max: MAX_TOKEN,
        }
    }

    /// End of this shape's token at `i`, if the whole token matches.
    fn end_at(&self, b: &[u8], i: usize) -> Option<usize> {
        if !b.get(i..).is_some_and(|t| t.starts_with(self.prefix)) {
            return None;
        }
        let s = i + self.prefix.len();
        // Bounded so that a failed attempt costs at most `max + 1` bytes.
        let limit = s.saturating_add(self.max).saturating_add(1);
        let e = run_end_within(b, s, limit, self.body);
        let len = len_of((s, e));
        (len >= self.min && len <= self.max && !is_word(at(b, e))).then_some(e)
    }
}

fn scan_prefixed(b: &[u8], cloud: bool, api: bool, out: &mut Vec<Found>) {
    let mut i = 0;
    while i < b.len() {
        if !matches!(at(b, i), b'A' | b'g' | b'x' | b's' | b'r') || is_word(before(b, i, 1)) {
            i += 1;
            continue;
        }
        let hit = SHAPES
            .iter()
            .filter(|s| match s.detector {
                Detector::CloudKey => cloud,
                _ => api,
            })
            .find_map(|s| s.end_at(b, i).map(|e| (s.detector, e)));
        match hit {
            Some((d, e)) => {
                out.push((d, i..e));
                i = e;
            }
            None => i += 1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Labelled secrets: `key = value`, `key: value`, `"key": "value"`, `key => value`

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')
}

fn is_secret_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'/' | b'=' | b'.')
}

fn is_b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=')
}

const GENERIC_LABELS: &[&[u8]] = &[b"apikey", b"secret", b"token", b"password", b"passwd"];

/// The key name ending just before the separator at `p` (skipping spaces and a closing quote,
/// possibly backslash-escaped).
fn label_before(b: &[u8], p: usize) -> Option<&[u8]> {
    let mut k = p;
    while matches!(before(b, k, 1), b' ' | b'\t') {
        k -= 1;
    }
    if matches!(before(b, k, 1), b'"' | b'\'') {
        k -= 1;
        if before(b, k, 1) == b'\\' {
            k -= 1;
        }
    }
    let end = k;
    while is_key_char(before(b, k, 1)) {
        k -= 1;
    }
    if k == end { None } else { b.get(k..end) }
}

/// The value after the separator at `p` (skipping `>` of `=>`, spaces and an opening quote).
fn value_after(b: &[u8], p: usize) -> (usize, usize) {
    let mut v = p + 1;
    if at(b, p) == b'=' && at(b, v) == b'>' {
        v += 1;
    }
    while matches!(at(b, v), b' ' | b'\t') {
        v += 1;
    }
    if at(b, v) == b'\\' && matches!(at(b, v + 1), b'"' | b'\'') {
        v += 1;
    }
    if matches!(at(b, v), b'"' | b'\'') {
        v += 1;
    }
    let mut e = run_end(b, v, is_secret_char);
    while e > v && before(b, e, 1) == b'.' {
        e -= 1;
    }
    (v, e)
}

/// Which labelled-secret rules a key name triggers.
#[derive(Default)]
struct LabelKind {
    aws: bool,
    gcp: bool,
    azure: bool,
    generic: bool,
}

impl LabelKind {
    /// Classifies a key by its lowercase alphanumerics (`DB_PASSWORD` -> `dbpassword`).
    fn of(key: &[u8], cloud: bool, api: bool) -> Option<LabelKind> {
        let mut buf = [0u8; 128];
        let mut n = 0;
        for &c in key.iter().filter(|c| c.is_ascii_alphanumeric()) {
            let slot = buf.get_mut(n)?;
            *slot = c.to_ascii_lowercase();
            n += 1;
        }
        let norm = buf.get(..n)?;
        let kind = LabelKind {
            aws: cloud && (contains(norm, b"secretaccesskey") || norm.ends_with(b"awssecretkey")),
            gcp: cloud && norm.ends_with(b"privatekeyid"),
            azure: cloud && (norm.ends_with(b"accountkey") || norm.ends_with(b"sharedaccesskey")),
            generic: api && GENERIC_LABELS.iter().any(|l| contains(norm, l)),
        };
        (kind.aws || kind.gcp || kind.azure || kind.generic).then_some(kind)
    }

    fn judge(&self, value: &[u8]) -> Option<Detector> {
        let b64 = || value.iter().all(|&c| is_b64(c));
        if (self.aws && value.len() == 40 && b64())
            || (self.gcp && value.len() == 40 && value.iter().all(u8::is_ascii_hexdigit))
            || (self.azure && value.len() >= 40 && b64())
        {
            Some(Detector::CloudKey)
        } else if self.generic && value.len() >= 16 {
            Some(Detector::ApiKey)
        } else {
            None
        }
    }
}

fn scan_labelled(b: &[u8], cloud: bool, api: bool, out: &mut Vec<Found>) {
    let mut p = 0;
    while p < b.len() {
        let c = at(b, p);
        let kind = if c == b'=' || c == b':' {
            label_before(b, p).and_then(|key| LabelKind::of(key, cloud, api))
        } else {
            None
        };
        let Some(kind) = kind else {
            p += 1;
            continue;
        };
        let (vs, ve) = value_after(b, p);
        if let Some(d) = kind.judge(b.get(vs..ve).unwrap_or(&[])) {
            out.push((d, vs..ve));
        }
        // The value is consumed either way: this keeps the scan linear.
        p = ve.max(p + 1);
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;

    use Detector::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    const AWS_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const AZURE_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    const RSA_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naFDrBz9vFqU4yK3Ykz0u7w==\n-----END RSA PRIVATE KEY-----";

    /// Substrings found in `text` by detector `d` alone.
    fn only(d: Detector, text: &str) -> Vec<String> {
        let found = Detectors::new(&[d]).find(text);
        for (fd, _) in &found {
            assert_eq!(*fd, d, "{text:?}");
        }
        found
            .into_iter()
            .map(|(_, r)| text[r].to_string())
            .collect()
    }

    /// (detector, substring) found in `text` by every detector together.
    fn all(text: &str) -> Vec<(Detector, String)> {
        Detectors::new(&Detector::ALL)
            .find(text)
            .into_iter()
            .map(|(d, r)| (d, text[r].to_string()))
            .collect()
    }

    fn gh_token() -> String {
        format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI2kL4")
    }

    /// Positive cases: detector, text, expected matches (with that detector alone).
    fn positives() -> Vec<(Detector, String, Vec<String>)> {
        let s = |x: &str| x.to_string();
        let mut v: Vec<(Detector, String, Vec<String>)> = Vec::new();
        let mut add = |d: Detector, text: &str, exp: &[&str]| {
            v.push((d, s(text), exp.iter().map(|e| s(e)).collect()));
        };
        // Email
        add(Email, "a@b.io", &["a@b.io"]);
        add(Email, r#"{"email":"a@b.io"}"#, &["a@b.io"]);
        add(
            Email,
            "42,john.smith+tag@mail.example.co.uk,NY",
            &["john.smith+tag@mail.example.co.uk"],
        );
        add(
            Email,
            "contact alice@example.com or bob_99@corp-mail.org.",
            &["alice@example.com", "bob_99@corp-mail.org"],
        );
        add(Email, "Zoë <zoë@exämple.com>", &["zoë@exämple.com"]);
        add(
            Email,
            "mailto:user%x@sub.domain.travel",
            &["user%x@sub.domain.travel"],
        );
        add(Email, "a@b.io,c@d.io", &["a@b.io", "c@d.io"]);
        add(Email, "...lead.dots@x.org", &["lead.dots@x.org"]);
        // Phone
        add(Phone, "+14155552671", &["+14155552671"]);
        add(Phone, "(415) 555-2671", &["(415) 555-2671"]);
        add(Phone, "415-555-2671", &["415-555-2671"]);
        add(Phone, "+44 20 7946 0958", &["+44 20 7946 0958"]);
        add(Phone, "+1 415.555.2671", &["+1 415.555.2671"]);
        add(
            Phone,
            "call +1 (415) 555-2671 tomorrow",
            &["+1 (415) 555-2671"],
        );
        add(Phone, r#"{"phone":"415.555.2671"}"#, &["415.555.2671"]);
        add(Phone, "1-800-555-0199", &["1-800-555-0199"]);
        add(Phone, "020 7946 0958", &["020 7946 0958"]);
        add(Phone, "+33 6 12 34 56 78", &["+33 6 12 34 56 78"]);
        add(Phone, "+44 (0) 20 7946 0958", &["+44 (0) 20 7946 0958"]);
        add(Phone, "7,(212) 555-0100,NY", &["(212) 555-0100"]);
        add(Phone, "tel:+49-30-1234567", &["+49-30-1234567"]);
        add(Phone, "(020) 7946 0958", &["(020) 7946 0958"]);
        add(
            Phone,
            "a 415 555 2671 b, c 212-555-0100",
            &["415 555 2671", "212-555-0100"],
        );
        // Card
        add(CardNumber, "4111 1111 1111 1111", &["4111 1111 1111 1111"]);
        add(CardNumber, "4111-1111-1111-1111", &["4111-1111-1111-1111"]);
        add(CardNumber, "4111111111111111", &["4111111111111111"]);
        add(
            CardNumber,
            r#"{"card":"5555555555554444"}"#,
            &["5555555555554444"],
        );
        add(
            CardNumber,
            "Amex 378282246310005 exp 12/29",
            &["378282246310005"],
        );
        add(CardNumber, "3782 822463 10005", &["3782 822463 10005"]);
        add(
            CardNumber,
            "paid with 6011111111111117, thanks",
            &["6011111111111117"],
        );
        add(CardNumber, "1,4012888888881881,USD", &["4012888888881881"]);
        add(
            CardNumber,
            "two: 4111111111111111 and 5105105105105100",
            &["4111111111111111", "5105105105105100"],
        );
        add(
            CardNumber,
            "qty 12 4111 1111 1111 1111",
            &["4111 1111 1111 1111"],
        );
        add(
            CardNumber,
            "4111 1111 1111 1111 42",
            &["4111 1111 1111 1111"],
        );
        add(CardNumber, "4222222222222", &["4222222222222"]);
        // SSN
        add(UsSsn, "123-45-6789", &["123-45-6789"]);
        add(UsSsn, "ssn: 078-05-1120.", &["078-05-1120"]);
        add(UsSsn, r#"{"ssn":"219-09-9999"}"#, &["219-09-9999"]);
        add(
            UsSsn,
            "Smith,123-45-6789,NY,899-99-9999",
            &["123-45-6789", "899-99-9999"],
        );
        // IBAN
        add(Iban, "DE89370400440532013000", &["DE89370400440532013000"]);
        add(
            Iban,
            "DE89 3704 0044 0532 0130 00",
            &["DE89 3704 0044 0532 0130 00"],
        );
        add(
            Iban,
            "pay GB82 WEST 1234 5698 7654 32 now",
            &["GB82 WEST 1234 5698 7654 32"],
        );
        add(
            Iban,
            "FR1420041010050500013M02606",
            &["FR1420041010050500013M02606"],
        );
        add(
            Iban,
            r#"{"iban":"NL91ABNA0417164300"}"#,
            &["NL91ABNA0417164300"],
        );
        add(Iban, "BE68539007547034", &["BE68539007547034"]);
        add(Iban, "CH9300762011623852957", &["CH9300762011623852957"]);
        add(Iban, "NO9386011117947", &["NO9386011117947"]);
        add(
            Iban,
            "x,ES9121000418450200051332,y",
            &["ES9121000418450200051332"],
        );
        add(
            Iban,
            "IT60X0542811101000000123456",
            &["IT60X0542811101000000123456"],
        );
        add(Iban, "AT611904300234573201", &["AT611904300234573201"]);
        add(
            Iban,
            "PL61109010140000071219812874",
            &["PL61109010140000071219812874"],
        );
        add(
            Iban,
            "SE4550000000058398257466",
            &["SE4550000000058398257466"],
        );
        add(
            Iban,
            "DK5000400440116243 FI2112345600000785",
            &["DK5000400440116243", "FI2112345600000785"],
        );
        add(Iban, "IE29AIBK93115212345678", &["IE29AIBK93115212345678"]);
        add(
            Iban,
            "PT50000201231234567890154",
            &["PT50000201231234567890154"],
        );
        add(Iban, "LU280019400644750000", &["LU280019400644750000"]);
        add(
            Iban,
            "SA0380000000608010167519",
            &["SA0380000000608010167519"],
        );
        // IPv4
        add(Ipv4, "192.168.1.1", &["192.168.1.1"]);
        add(Ipv4, "host=10.0.0.1:5432", &["10.0.0.1"]);
        add(Ipv4, r#"{"ip":"8.8.8.8"}"#, &["8.8.8.8"]);
        add(
            Ipv4,
            "from 172.16.254.1 to 255.255.255.255.",
            &["172.16.254.1", "255.255.255.255"],
        );
        add(Ipv4, "10.0.0.0/8", &["10.0.0.0"]);
        // IPv6
        add(Ipv6, "::1", &["::1"]);
        add(
            Ipv6,
            "fe80::1ff:fe23:4567:890a",
            &["fe80::1ff:fe23:4567:890a"],
        );
        add(Ipv6, "2001:db8::", &["2001:db8::"]);
        add(Ipv6, "::ffff:192.0.2.1", &["::ffff:192.0.2.1"]);
        add(
            Ipv6,
            "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            &["2001:0db8:85a3:0000:0000:8a2e:0370:7334"],
        );
        add(Ipv6, "[2001:db8::1]:443", &["2001:db8::1"]);
        add(Ipv6, r#"{"addr":"2001:db8::1"}"#, &["2001:db8::1"]);
        add(Ipv6, "ip:fe80::1, gw ::1.", &["fe80::1", "::1"]);
        // JWT
        add(Jwt, JWT, &[JWT]);
        add(Jwt, &format!("Authorization: Bearer {JWT}"), &[JWT]);
        add(Jwt, &format!(r#"{{"access_token":"{JWT}","n":1}}"#), &[JWT]);
        add(
            Jwt,
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0.",
            &["eyJhbGciOiJub25lIn0.eyJzdWIiOiIxMjM0NTY3ODkwIn0."],
        );
        // Cloud keys
        add(CloudKey, "AKIAIOSFODNN7EXAMPLE", &["AKIAIOSFODNN7EXAMPLE"]);
        add(
            CloudKey,
            "id=ASIAY34FZKBOKMUTVV7A;",
            &["ASIAY34FZKBOKMUTVV7A"],
        );
        add(
            CloudKey,
            &format!("aws_secret_access_key = {AWS_SECRET}"),
            &[AWS_SECRET],
        );
        add(
            CloudKey,
            &format!(r#"{{"SecretAccessKey": "{AWS_SECRET}"}}"#),
            &[AWS_SECRET],
        );
        add(
            CloudKey,
            "key AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI end",
            &["AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI"],
        );
        add(
            CloudKey,
            r#"{"type":"service_account","private_key_id":"0123456789abcdef0123456789abcdef01234567"}"#,
            &["0123456789abcdef0123456789abcdef01234567"],
        );
        add(
            CloudKey,
            &format!(
                "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={AZURE_KEY};EndpointSuffix=core.windows.net"
            ),
            &[AZURE_KEY],
        );
        // API keys
        add(ApiKey, &gh_token(), &[&gh_token()]);
        let pat = format!("github_pat_{}", "A1b2C3d4E5_".repeat(8));
        add(ApiKey, &format!("t={pat}"), &[&pat]);
        add(
            ApiKey,
            "xoxb-1234567890-abcdefghij",
            &["xoxb-1234567890-abcdefghij"],
        );
        add(
            ApiKey,
            "STRIPE sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            &["sk_live_4eC39HqLyjWDarjtT1zdp7dc"],
        );
        let oa = format!("sk-proj-{}", "Ab1_Cd2-Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv");
        add(ApiKey, &format!("OPENAI_API_KEY={oa}"), &[&oa]);
        add(
            ApiKey,
            "api_key=abcd1234efgh5678ijkl",
            &["abcd1234efgh5678ijkl"],
        );
        add(
            ApiKey,
            r#"{"apiKey": "abcd1234efgh5678ijkl"}"#,
            &["abcd1234efgh5678ijkl"],
        );
        add(
            ApiKey,
            "password: hunter2hunter2hunter2.",
            &["hunter2hunter2hunter2"],
        );
        add(
            ApiKey,
            "DB_PASSWORD='S3cr3t_P4ssw0rd_2024!'",
            &["S3cr3t_P4ssw0rd_2024"],
        );
        add(
            ApiKey,
            "https://x.io/cb?client_secret=Zm9vYmFyYmF6cXV4cXV1eA&x=1",
            &["Zm9vYmFyYmF6cXV4cXV1eA"],
        );
        add(
            ApiKey,
            r#"{\"token\": \"abcdefghijklmnop1234\"}"#,
            &["abcdefghijklmnop1234"],
        );
        add(
            ApiKey,
            ":token => 'abcdefghijklmnop1234'",
            &["abcdefghijklmnop1234"],
        );
        // Private keys
        add(PrivateKey, RSA_PEM, &[RSA_PEM]);
        let ossh = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
        add(PrivateKey, &format!("key:\n{ossh}\ntrailer"), &[ossh]);
        let ec = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n-----END EC PRIVATE KEY-----";
        add(PrivateKey, ec, &[ec]);
        let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIFHDBOBgkqhkiG9w0BBQ0wQTApBgkqhkiG9w0BBQwwHAQI\n-----END ENCRYPTED PRIVATE KEY-----";
        add(PrivateKey, enc, &[enc]);
        let p8 = r"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----";
        add(
            PrivateKey,
            &format!(r#"{{"private_key": "{p8}\n"}}"#),
            &[p8],
        );
        add(
            PrivateKey,
            "x -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BA",
            &["-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BA"],
        );
        v
    }

    /// Negative cases: detector, text that it must not match.
    const NEGATIVES: &[(Detector, &str)] = &[
        (Email, "foo@bar"),
        (Email, "@handle"),
        (Email, "a@b.c"),
        (Email, "root@localhost"),
        (Email, "x@10.0.0.1"),
        (Email, "john@"),
        (Email, "..@x.com"),
        (Phone, "2024-01-15"),
        (Phone, "12345"),
        (Phone, "1234567890"),
        (Phone, "192.168.1.1"),
        (Phone, "123-45-6789"),
        (Phone, "2024-01-15T12:30:45+01:00"),
        (Phone, "2024-01-15 12:30:45.123456+00"),
        (Phone, "12:30:45"),
        (Phone, "3.14159265358979"),
        (Phone, "550e8400-e29b-41d4-a716-446655440000"),
        (Phone, "12345678-1234-1234-1234-123456789012"),
        (Phone, "+12 34"),
        (Phone, "415-555-26710"),
        (Phone, "x415-555-2671"),
        (Phone, "1.2.3.4"),
        (Phone, "01-15-2024"),
        (Phone, "$1,234,567.89"),
        (Phone, "+2024-01-15"),
        (Phone, "on 01 02 2024 10 people"),
        (Phone, "sizes 100 200 3000"),
        (Phone, "4111 1111 1111 1111"),
        (CardNumber, "4111111111111112"),
        (CardNumber, "0000000000000000"),
        (CardNumber, "6666666666666"),
        (CardNumber, "44444444444444444"),
        (CardNumber, "1234567890123456789"),
        (CardNumber, "12345678-1234-1234-1234-123456789012"),
        (CardNumber, "3.4111111111111111"),
        (CardNumber, "4111111111111111111111"),
        (CardNumber, "card4111111111111111"),
        (CardNumber, "4111111111111111x"),
        (CardNumber, "2024-01-15 12:30:45"),
        (CardNumber, "4111-1111-1111-1111-1111"),
        (UsSsn, "000-12-3456"),
        (UsSsn, "666-12-3456"),
        (UsSsn, "900-12-3456"),
        (UsSsn, "123-00-4567"),
        (UsSsn, "123-45-0000"),
        (UsSsn, "123456789"),
        (UsSsn, "1123-45-6789"),
        (UsSsn, "123-45-67890"),
        (UsSsn, "a123-45-6789"),
        (UsSsn, "2024-01-15"),
        (Iban, "DE89370400440532013001"),
        (Iban, "DE8937040044053201300"),
        (Iban, "DE893704004405320130000"),
        (Iban, "GB82 WEST 1234 5698 7654 33"),
        (Iban, "XDE89370400440532013000"),
        (Iban, "de89370400440532013000"),
        (Iban, "AB12"),
        (Ipv4, "256.1.1.1"),
        (Ipv4, "1.2.3.4.5"),
        (Ipv4, "10.0.0.1.2"),
        (Ipv4, "v1.2.3.4"),
        (Ipv4, "1.2.3"),
        (Ipv4, "2024.01.15"),
        (Ipv4, "3.14159"),
        (Ipv4, "1.2.3.4a"),
        (Ipv4, "1.2.3.1000"),
        (Ipv6, "12:30:45"),
        (Ipv6, "2024-01-15T12:30:45Z"),
        (Ipv6, "std::vector"),
        (Ipv6, "::"),
        (Ipv6, "1:2:3:4:5:6:7:8:9"),
        (Ipv6, "2001:db8:::1"),
        (Ipv6, "2001::db8::1"),
        (Ipv6, "00:1a:2b:3c:4d:5e"),
        (Ipv6, "12345::1"),
        (Ipv6, "::1.2.3.4:5"),
        (Ipv6, "Foo::bar"),
        (Jwt, "eyJhbGci"),
        (Jwt, "eyJ.abc.def"),
        (Jwt, "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.abc"),
        (Jwt, "eyJhbGciOiJIUzI1NiJ9.short.sig"),
        (Jwt, "eyJhbGciOiJIUzI1NiJ9 eyJzdWIiOiIxMjM0In0"),
        (CloudKey, "AKIAIOSFODNN7EXAMPL"),
        (CloudKey, "AKIAIOSFODNN7EXAMPLEX"),
        (CloudKey, "xAKIAIOSFODNN7EXAMPLE"),
        (CloudKey, "AKIAIOSFODNN7EXAMPLEx"),
        (CloudKey, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        (CloudKey, "AccountKey=short=="),
        (CloudKey, "aws_secret_access_key = tooShort"),
        (CloudKey, "AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqK"),
        (ApiKey, "password: short"),
        (ApiKey, "token: 12345"),
        (ApiKey, "ghp_short"),
        (ApiKey, "550e8400-e29b-41d4-a716-446655440000"),
        (ApiKey, "task-1234567890abcdefghijklmnopqrstuvwxyz"),
        (ApiKey, "secretary: Jane"),
        (ApiKey, "sk_live_short"),
        (ApiKey, "password = \"correct horse battery staple\""),
        (ApiKey, "username=alice_the_great_admin"),
        (ApiKey, "xoxb-short"),
        (
            PrivateKey,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        ),
        (
            PrivateKey,
            "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
        ),
        (PrivateKey, "-----BEGIN private key-----"),
    ];

    /// Values no detector may match.
    const CLEAN: &[&str] = &[
        "",
        "0",
        "42",
        "-17",
        "3.14159",
        "1234567890",
        "2024-01-15",
        "2024-01-15 12:30:45.123456+00",
        "2024-01-15T12:30:45Z",
        "12:30:45",
        "550e8400-e29b-41d4-a716-446655440000",
        "550E8400-E29B-41D4-A716-446655440000",
        "1.2.3",
        "v1.2.3.4",
        "10.0.0.1.2",
        "t",
        "false",
        "Alice Smith",
        "O'Brien, Jr.",
        "deadbeef",
        "0x1f2e3d",
        "$1,234.56",
        "{\"a\":1,\"b\":[1,2,3]}",
        "select * from users where id = 5",
        "https://example.com/path?q=1",
        "PostgreSQL 16.2 on x86_64-pc-linux-gnu",
        "Zoë Ñúñez",
        "東京都千代田区",
        "(1,2)",
        "[1,2,3]",
        "1e10",
    ];

    #[test]
    fn positives_found_with_single_detector() {
        let cases = positives();
        assert!(cases.len() >= 90, "{}", cases.len());
        for (d, text, exp) in &cases {
            assert_eq!(&only(*d, text), exp, "{d:?} on {text:?}");
        }
    }

    #[test]
    fn positives_found_with_all_detectors() {
        // With every detector on, each expected match is covered by a range of that detector
        // (possibly merged into a larger one that starts at the same place).
        for (d, text, exp) in positives() {
            let got = Detectors::new(&Detector::ALL).find(&text);
            for e in &exp {
                let start = text.find(e.as_str()).unwrap();
                let end = start + e.len();
                assert!(
                    got.iter().any(|(_, r)| r.start <= start && end <= r.end),
                    "{d:?} {e:?} in {text:?}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn negatives_not_found() {
        assert!(NEGATIVES.len() >= 80);
        for (d, text) in NEGATIVES {
            assert_eq!(only(*d, text), Vec::<String>::new(), "{d:?} on {text:?}");
        }
    }

    #[test]
    fn clean_values_match_nothing() {
        for text in CLEAN {
            assert_eq!(all(text), vec![], "{text:?}");
        }
    }

    #[test]
    fn several_matches_in_one_value() {
        let text = "alice@example.com, 4111 1111 1111 1111, 192.168.0.1, 123-45-6789, fe80::1";
        let got = all(text);
        assert_eq!(
            got,
            vec![
                (Email, "alice@example.com".to_string()),
                (CardNumber, "4111 1111 1111 1111".to_string()),
                (Ipv4, "192.168.0.1".to_string()),
                (UsSsn, "123-45-6789".to_string()),
                (Ipv6, "fe80::1".to_string()),
            ]
        );
    }

    #[test]
    fn csv_line_with_mixed_content() {
        let text = "7,Bob,bob@corp.io,+1 415.555.2671,DE89370400440532013000,AKIAIOSFODNN7EXAMPLE";
        let got: Vec<Detector> = all(text).into_iter().map(|(d, _)| d).collect();
        assert_eq!(got, vec![Email, Phone, Iban, CloudKey]);
    }

    #[test]
    fn card_wins_over_phone() {
        assert_eq!(
            all("+4222222222222"),
            vec![(CardNumber, "4222222222222".to_string())]
        );
        assert_eq!(
            only(Phone, "+4222222222222"),
            vec!["+4222222222222".to_string()]
        );
    }

    #[test]
    fn jwt_wins_over_labelled_api_key() {
        let text = format!("token={JWT}");
        assert_eq!(all(&text), vec![(Jwt, JWT.to_string())]);
    }

    #[test]
    fn labelled_aws_secret_is_api_key_when_cloud_disabled() {
        let text = format!("aws_secret_access_key = {AWS_SECRET}");
        assert_eq!(only(ApiKey, &text), vec![AWS_SECRET.to_string()]);
        assert_eq!(all(&text), vec![(CloudKey, AWS_SECRET.to_string())]);
    }

    #[test]
    fn pem_block_covers_inner_matches() {
        let text = format!("k={RSA_PEM} and a@b.io");
        assert_eq!(
            all(&text),
            vec![
                (PrivateKey, RSA_PEM.to_string()),
                (Email, "a@b.io".to_string())
            ]
        );
    }

    #[test]
    fn merged_overlaps_keep_first_detector() {
        let found = finish(vec![
            (Phone, 5..12),
            (Email, 0..8),
            (Ipv4, 20..25),
            (Ipv6, 20..30),
            (Jwt, 29..31),
        ]);
        assert_eq!(found, vec![(Email, 0..12), (Ipv6, 20..31)]);
    }

    #[test]
    fn names_round_trip() {
        let names: Vec<&str> = Detector::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(
            names,
            [
                "email",
                "phone",
                "card_number",
                "us_ssn",
                "iban",
                "ipv4",
                "ipv6",
                "jwt",
                "cloud_key",
                "api_key",
                "private_key"
            ]
        );
        for d in Detector::ALL {
            assert_eq!(Detector::from_name(d.name()), Some(d));
        }
        assert_eq!(Detector::from_name("Email"), None);
        assert_eq!(Detector::from_name(""), None);
    }

    #[test]
    fn empty_set_finds_nothing() {
        let d = Detectors::new(&[]);
        assert!(d.is_empty());
        assert!(!d.may_match(b"a@b.io 4111111111111111"));
        assert!(d.find("a@b.io 4111111111111111").is_empty());
        assert!(!Detectors::new(&[Email, Email]).is_empty());
    }

    #[test]
    fn detectors_are_send_and_sync() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Detectors>();
    }

    #[test]
    fn may_match_rejects_typical_clean_values() {
        let ds = Detectors::new(&Detector::ALL);
        for v in [
            "42",
            "Alice",
            "2024-01-15",
            "true",
            "3.14",
            "12:30:45",
            "hello world",
        ] {
            assert!(!ds.may_match(v.as_bytes()), "{v:?}");
        }
    }

    #[test]
    fn may_match_accepts_every_positive() {
        for (d, text, _) in positives() {
            assert!(
                Detectors::new(&[d]).may_match(text.as_bytes()),
                "{d:?} {text:?}"
            );
            assert!(Detectors::new(&Detector::ALL).may_match(text.as_bytes()));
        }
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// Checks the invariants of one `find` result, and that the pre-check agrees with an
    /// unfiltered scan.
    fn check_invariants(ds: &Detectors, text: &str) {
        let unfiltered = ds.find_with(text, false);
        let filtered = ds.find(text);
        assert_eq!(filtered, unfiltered, "{text:?}");
        if !unfiltered.is_empty() {
            assert!(
                ds.may_match(text.as_bytes()),
                "may_match false for {text:?}: {unfiltered:?}"
            );
        }
        let mut last_end = 0;
        for (_, r) in &unfiltered {
            assert!(r.start < r.end && r.end <= text.len(), "{text:?} {r:?}");
            assert!(r.start >= last_end, "overlap in {text:?}: {unfiltered:?}");
            assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
            last_end = r.end;
        }
    }

    #[test]
    fn may_match_never_false_when_find_finds_pseudo_random() {
        const ALPHABET: &[u8] = b"0123456789012345abcdefxyzABEFXYZ@.- :+_=()eyJ";
        let sets: Vec<Detectors> = Detector::ALL
            .iter()
            .map(|d| Detectors::new(&[*d]))
            .chain([Detectors::new(&Detector::ALL)])
            .collect();
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut hits = 0;
        for _ in 0..4000 {
            let len = rng.below(48);
            let text: String = (0..len)
                .map(|_| char::from(ALPHABET[rng.below(ALPHABET.len())]))
                .collect();
            for ds in &sets {
                check_invariants(ds, &text);
            }
            hits += usize::from(!sets[11].find(&text).is_empty());
        }
        assert!(hits > 0, "the random strings never matched anything");
    }

    #[test]
    fn may_match_never_false_on_structured_random_values() {
        // Pieces that tend to form matches, glued with random separators.
        let pieces = [
            "4111",
            "1111",
            "5555",
            "4444",
            "0",
            "12",
            "123",
            "415",
            "555",
            "2671",
            "255",
            "192",
            "168",
            "1",
            "DE89",
            "3704",
            "0044",
            "0532",
            "0130",
            "00",
            "fe80",
            "::",
            ":",
            "ffff",
            "a@b",
            "x.io",
            "eyJhbGciOiJIUzI1NiJ9",
            "AKIA",
            "IOSFODNN7EXAMPLE",
            "token",
            "=",
            "abcdefghijklmnop",
            "+",
            "(",
            ")",
            "-",
            ".",
            " ",
            "ë",
            "€",
            "-----BEGIN ",
            "PRIVATE KEY-----",
            "-----END ",
            "sk-",
            "ghp_",
            "078",
            "05",
            "1120",
        ];
        let seps = ["", "", " ", "-", ".", ":", ","];
        let sets: Vec<Detectors> = Detector::ALL
            .iter()
            .map(|d| Detectors::new(&[*d]))
            .chain([Detectors::new(&Detector::ALL)])
            .collect();
        let mut rng = XorShift(12345);
        let mut hits = 0;
        for _ in 0..4000 {
            let n = 1 + rng.below(10);
            let mut text = String::new();
            for _ in 0..n {
                text.push_str(rng.pick(&pieces));
                text.push_str(rng.pick(&seps));
            }
            for ds in &sets {
                check_invariants(ds, &text);
            }
            hits += usize::from(!sets[11].find(&text).is_empty());
        }
        assert!(hits > 100, "{hits}");
    }

    #[test]
    fn non_ascii_input_is_safe() {
        let texts = [
            "Zoë <zoë@exämple.com>",
            "ñ4111111111111111ñ",
            "été 415-555-2671 €",
            "ü@ü.üü",
            "東京@例え.日本",
            "a@b.c€",
            "€€€::1€€€",
            "é-----BEGIN PRIVATE KEY-----é",
            "password=é",
            "token: ÄÖÜäöüßÄÖÜäöüßÄÖÜ",
            "@",
            "é@",
            "@é",
        ];
        let ds = Detectors::new(&Detector::ALL);
        for t in texts {
            check_invariants(&ds, t);
        }
        assert_eq!(
            all("東京@例え.日本"),
            vec![(Email, "東京@例え.日本".to_string())]
        );
        assert_eq!(
            all("ñ4111111111111111ñ"),
            vec![(CardNumber, "4111111111111111".to_string())]
        );
    }

    #[test]
    fn ten_thousand_clean_values() {
        let first = [
            "Alice", "Bob", "Zoë", "María", "Jean-Luc", "O'Neil", "李", "Ahmed",
        ];
        let last = [
            "Smith",
            "Müller",
            "García",
            "Nguyen",
            "van der Berg",
            "Okafor",
        ];
        let words = [
            "active", "pending", "shipped", "t", "f", "NULL", "EUR", "n/a",
        ];
        let ds = Detectors::new(&Detector::ALL);
        let mut rng = XorShift(0xDEAD_BEEF);
        let mut checked = 0;
        for k in 0..10_000 {
            let v = match k % 8 {
                0 => format!("{}", rng.next() as i32),
                1 => format!("{} {}", rng.pick(&first), rng.pick(&last)),
                2 => format!(
                    "{:04}-{:02}-{:02}",
                    1970 + rng.below(80),
                    1 + rng.below(12),
                    1 + rng.below(28)
                ),
                3 => format!(
                    "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}+00",
                    1970 + rng.below(80),
                    1 + rng.below(12),
                    1 + rng.below(28),
                    rng.below(24),
                    rng.below(60),
                    rng.below(60),
                    rng.below(1_000_000)
                ),
                4 => format!("{}.{:02}", rng.below(1_000_000), rng.below(100)),
                5 => {
                    let x = rng.next();
                    let y = rng.next();
                    format!(
                        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                        x >> 32,
                        (x >> 16) & 0xffff,
                        x & 0xffff,
                        y >> 48,
                        y & 0xffff_ffff_ffff
                    )
                }
                6 => rng.pick(&words).to_string(),
                _ => format!("{}:{:02}", rng.below(24), rng.below(60)),
            };
            assert_eq!(ds.find(&v), vec![], "{v:?}");
            checked += 1;
        }
        assert_eq!(checked, 10_000);
    }

    #[test]
    fn luhn_and_iban_checksums() {
        assert!(luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(!luhn(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]));
        assert!(iban_checksum_ok(b"GB82WEST12345698765432"));
        assert!(!iban_checksum_ok(b"GB82WEST12345698765433"));
    }

    #[test]
    fn ipv6_validation() {
        for ok in [
            "::1",
            "1::",
            "::",
            "a:b:c:d:e:f:1:2",
            "1:2:3:4:5:6::",
            "::ffff:1.2.3.4",
        ] {
            assert_eq!(valid_ipv6(ok.as_bytes()), ok != "::", "{ok}");
        }
        for bad in [
            "1:2:3:4:5:6:7:8::",
            "1:2:3:4:5:6:7",
            "1.2.3.4::1",
            ":1:2::",
            "g::1",
        ] {
            assert!(!valid_ipv6(bad.as_bytes()), "{bad}");
        }
    }
}
