//! Byte streams under the PostgreSQL session: plain or TLS, whole or split,
//! and a message reader that owns its buffer.
//!
//! [`MessageReader`] keeps unread bytes in its own `BytesMut`, so a read that
//! is cancelled inside `select!` loses nothing: the next call picks up where
//! the last one stopped.

use super::wire::{self, Frame, WireError};
use bytes::{Bytes, BytesMut};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Bytes to reserve before each read.
const READ_CHUNK: usize = 16 * 1024;

/// A connection to a client or an upstream server.
pub enum Conn {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    pub fn is_tls(&self) -> bool {
        !matches!(self, Self::Plain(_))
    }

    /// Splits into independent halves; plain TCP splits without a lock.
    pub fn split(self) -> (ConnRead, ConnWrite) {
        match self {
            Self::Plain(s) => {
                let (r, w) = s.into_split();
                (ConnRead::Plain(r), ConnWrite::Plain(w))
            }
            Self::ServerTls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ConnRead::ServerTls(r), ConnWrite::ServerTls(w))
            }
            Self::ClientTls(s) => {
                let (r, w) = tokio::io::split(*s);
                (ConnRead::ClientTls(r), ConnWrite::ClientTls(w))
            }
        }
    }
}

macro_rules! delegate_read {
    ($ty:ty, $($variant:ident),+) => {
        impl AsyncRead for $ty {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($ty:ty, $($variant:ident),+) => {
        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_write(cx, buf),)+
                }
            }
            fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)+
                }
            }
            fn is_write_vectored(&self) -> bool {
                match self {
                    $(Self::$variant(s) => s.is_write_vectored(),)+
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_flush(cx),)+
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

delegate_read!(Conn, Plain, ServerTls, ClientTls);
delegate_write!(Conn, Plain, ServerTls, ClientTls);

pub enum ConnRead {
    Plain(OwnedReadHalf),
    ServerTls(ReadHalf<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>),
}

pub enum ConnWrite {
    Plain(OwnedWriteHalf),
    ServerTls(WriteHalf<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>),
}

delegate_read!(ConnRead, Plain, ServerTls, ClientTls);
delegate_write!(ConnWrite, Plain, ServerTls, ClientTls);

/// Why reading a message failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Reads tagged messages from a stream, owning the read buffer.
pub struct MessageReader<R> {
    inner: R,
    buf: BytesMut,
    max_len: usize,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    pub fn new(inner: R, max_len: usize) -> Self {
        Self::with_buffer(inner, BytesMut::with_capacity(READ_CHUNK), max_len)
    }

    /// Starts with bytes already read from the stream.
    pub fn with_buffer(inner: R, buf: BytesMut, max_len: usize) -> Self {
        Self {
            inner,
            buf,
            max_len,
        }
    }

    pub fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }

    /// The next whole message already in the buffer, without reading.
    pub fn buffered(&mut self) -> Result<Option<Frame>, ReadError> {
        Ok(wire::decode_frame(&mut self.buf, self.max_len)?)
    }

    /// Reads more bytes into the buffer. Cancel-safe.
    pub async fn fill(&mut self) -> Result<(), ReadError> {
        self.buf.reserve(READ_CHUNK);
        let n = self.inner.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(if self.buf.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Truncated
            });
        }
        Ok(())
    }

    /// The next message, reading as needed. Cancel-safe.
    pub async fn next(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

/// Writes whole frames with as few syscalls as the stream allows.
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &mut Vec<Bytes>,
) -> io::Result<()> {
    let mut start = 0;
    let mut offset = 0;
    loop {
        // Empty frames have nothing to write (a write of nothing would read as WriteZero).
        while frames.get(start).is_some_and(|f| f.len() == offset) {
            start += 1;
            offset = 0;
        }
        if start == frames.len() {
            break;
        }
        let slices: Vec<IoSlice<'_>> = frames[start..]
            .iter()
            .enumerate()
            .map(|(i, f)| IoSlice::new(if i == 0 { &f[offset..] } else { &f[..] }))
            .take(64)
            .collect();
        let mut n = w.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while n > 0 && start < frames.len() {
            let left = frames[start].len() - offset;
            if n >= left {
                n -= left;
                start += 1;
                offset = 0;
            } else {
                offset += n;
                n = 0;
            }
        }
    }
    frames.clear();
    w.flush().await
}

/// The messages of one write: received frames forwarded as they are, and messages built here
/// (masked rows) appended to one buffer between them, so a rewritten result costs no
/// allocation per row and one write slice per run of rows.
#[derive(Default)]
pub struct Outgoing {
    frames: Vec<Bytes>,
    built: BytesMut,
    /// More than `BUILD_KEEP` bytes were built for one write: the buffer is let go after it.
    oversized: bool,
}

/// The least the build buffer grows by: one allocation serves many rows.
const BUILD_CHUNK: usize = 64 * 1024;
/// The most the build buffer keeps between writes.
const BUILD_KEEP: usize = 16 * BUILD_CHUNK;

impl Outgoing {
    /// A frame to send as it is, after everything before it. An empty one (a swallowed
    /// message) is nothing to send.
    pub fn forward(&mut self, frame: Bytes) {
        if frame.is_empty() {
            return;
        }
        self.seal();
        self.frames.push(frame);
    }

    /// The buffer to append a built message to, with room for at least `len` bytes.
    pub fn build(&mut self, len: usize) -> &mut BytesMut {
        if self.built.capacity() - self.built.len() < len {
            self.built.reserve(len.max(BUILD_CHUNK));
        }
        &mut self.built
    }

    /// Built messages so far become one frame of the batch.
    fn seal(&mut self) {
        if !self.built.is_empty() {
            // What was built, not what was asked for: a row can grow past its request (a
            // malformed row replaced by a wide all-NULL one).
            self.oversized |= self.built.len() > BUILD_KEEP;
            self.frames.push(self.built.split().freeze());
        }
    }

    /// Writes everything, in order, and flushes. After an error the batch is in an unknown
    /// state (part of it may have been sent): the session ends, the `Outgoing` with it.
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        self.seal();
        write_frames(w, &mut self.frames).await?;
        if std::mem::take(&mut self.oversized) {
            // A huge result does not keep its buffer for the rest of the session.
            self.built = BytesMut::new();
        }
        Ok(())
    }
}

/// Writes one buffer and flushes.
pub async fn write_buf<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> io::Result<()> {
    w.write_all(buf).await?;
    w.flush().await
}

impl<R> MessageReader<R> {
    /// The stream itself, for writing during a request/response exchange.
    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[tokio::test]
    async fn built_and_forwarded_messages_go_out_in_order() {
        let mut out = Outgoing::default();
        out.forward(Bytes::from_static(b"T1"));
        out.build(2).put_slice(b"D1");
        out.build(2).put_slice(b"D2");
        out.forward(Bytes::from_static(b"D3"));
        out.build(2).put_slice(b"D4");
        out.forward(Bytes::from_static(b"C1"));
        // Two runs of built rows, each one frame between the forwarded ones.
        assert_eq!(out.frames.len(), 5);
        let mut sink = Vec::new();
        out.write_to(&mut sink).await.unwrap();
        assert_eq!(sink, b"T1D1D2D3D4C1");
        // Empty frames (swallowed messages) are skipped, even when nothing else is left.
        out.forward(Bytes::new());
        assert!(out.frames.is_empty());
        let mut frames = vec![Bytes::new(), Bytes::from_static(b"Z1"), Bytes::new()];
        write_frames(&mut sink, &mut frames).await.unwrap();
        assert_eq!(sink, b"T1D1D2D3D4C1Z1");
        sink.clear();
        // Nothing is left for the next batch, and built rows at the end are written too.
        out.build(2).put_slice(b"D5");
        out.write_to(&mut sink).await.unwrap();
        assert_eq!(sink, b"D5");
        assert!(out.frames.is_empty() && out.built.is_empty());
    }

    /// Takes at most 3 bytes a call, so every write is partial.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(3);
            self.get_mut().0.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn partial_writes_resume_where_they_stopped() {
        // More frames than one write takes (64), of lengths 0 to 4, so writes end inside
        // frames, on their boundaries and next to empty ones.
        let mut frames: Vec<Bytes> = (0..150u8)
            .map(|i| Bytes::from(vec![i; usize::from(i % 5)]))
            .collect();
        let want: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let mut sink = Trickle(Vec::new());
        write_frames(&mut sink, &mut frames).await.unwrap();
        assert_eq!(sink.0, want);
        assert!(frames.is_empty());
    }

    #[tokio::test]
    async fn a_huge_batch_does_not_keep_its_buffer() {
        let mut out = Outgoing::default();
        out.build(10).put_slice(&vec![7u8; BUILD_KEEP + 1]);
        let mut sink = Vec::new();
        out.write_to(&mut sink).await.unwrap();
        assert_eq!(sink.len(), BUILD_KEEP + 1);
        assert_eq!(out.built.capacity(), 0);
        // An ordinary batch keeps it.
        out.build(10).put_slice(b"D1");
        out.write_to(&mut sink).await.unwrap();
        assert!(out.built.capacity() > 0);
    }
}
