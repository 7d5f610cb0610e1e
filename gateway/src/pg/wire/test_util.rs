//! Test-only helpers shared by the codec tests.

/// A tiny deterministic generator, so "random" splits and garbage are reproducible.
pub(crate) struct Lcg(pub u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A frame built by hand, as `decode_frame` would return it.
pub(crate) fn frame(tag: u8, body: &[u8]) -> super::Frame {
    let mut v = vec![tag];
    v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    super::Frame {
        tag,
        bytes: v.into(),
    }
}

/// Decodes the one message an encoder wrote into `buf` and renders it with `Debug`.
pub(crate) fn parse_one(buf: &mut bytes::BytesMut) -> String {
    let f = super::decode_frame(buf, super::MAX_MESSAGE_LEN)
        .unwrap()
        .unwrap();
    assert!(buf.is_empty(), "encoder wrote more than one message");
    format!("{:?}", super::backend::BackendMessage::parse(&f).unwrap())
}
