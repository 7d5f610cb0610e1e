//! Client sessions run on session threads: single-threaded Tokio runtimes, each with its own
//! I/O driver, and every session pinned to one of them from accept to end.
//!
//! A session's two directions, its client and upstream sockets and its timers then wake one
//! thread, the one already running it: no work stealing, and no waking of an idle worker
//! thread (a futex call and two context switches) for every readiness event, which on a
//! multi-threaded runtime cost about as much as the relay's own work per statement
//! (docs/benchmarks.md). Accepted connections are handed out in turn.
//!
//! What it costs: a session that computes for long (a SCRAM exchange with the upstream, a
//! large masked result) delays the other sessions of its thread for that time; nothing moves
//! them to an idle thread. The gateway's background work (config watch, audit upload, fsync,
//! metrics) stays on the process's main runtime.
//!
//! How many: `session_threads` in the gateway's settings (at most [`MAX`]), by default one per
//! core but one, and at least one. The core left over is for the main runtime (the audit
//! upload and its gRPC calls, the group fsync) and, where the gateway shares its machine, for
//! the database or the clients. Fewer threads also means each carries more sessions, so it
//! wakes once for several sessions' traffic: on 2 cores shared with PostgreSQL and pgbench, one
//! session thread spent 27–34 µs of gateway CPU per `pgbench -S` transaction where two spent
//! 28–39 (8 and 32 clients), and was as fast or faster in all but one cell (docs/benchmarks.md,
//! "Session threads").

use crate::Gateway;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

type Accepted = (std::net::TcpStream, SocketAddr);

/// The most session threads a gateway may be configured with.
pub const MAX: usize = 1024;

/// The session threads of one listener. Dropping it lets each thread finish: it takes no
/// new sessions, and ends when its open sessions have.
pub struct SessionThreads {
    threads: Vec<mpsc::UnboundedSender<Accepted>>,
    next: AtomicUsize,
}

impl SessionThreads {
    /// Starts `n` session threads, or when `n` is 0 the default: one per core the process may
    /// run on, but one, and at least one (see the module docs). Returns once every thread is
    /// running.
    pub fn start(gw: &Gateway, n: usize) -> std::io::Result<Self> {
        let n = if n == 0 { default_count() } else { n };
        let (started_tx, started) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            let gw = gw.clone();
            let started_tx = started_tx.clone();
            // The runtime is built on its own thread: one dropped here, in the caller's async
            // context, would panic.
            std::thread::Builder::new()
                .name(format!("countersign-session-{i}"))
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    let runtime = match runtime {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = started_tx.send(Ok(()));
                    drop(started_tx);
                    runtime.block_on(serve(gw, rx));
                })?;
            threads.push(tx);
        }
        drop(started_tx);
        // Each thread has its name once it runs. On an error, dropping `threads` ends the
        // threads that did start.
        for _ in 0..n {
            started
                .recv()
                .map_err(|_| std::io::Error::other("a session thread ended before it ran"))??;
        }
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands an accepted connection to the next thread. A connection that cannot be moved
    /// (its socket is closed at once) is logged and dropped: the client sees it close.
    pub fn dispatch(&self, tcp: tokio::net::TcpStream, peer: SocketAddr) {
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "cannot hand a client connection to a session thread");
                return;
            }
        };
        let n = self.threads.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut conn = (tcp, peer);
        // A thread that is gone (it cannot be, short of a bug) is passed over.
        for i in (first..first + n).map(|i| i % n) {
            let Some(thread) = self.threads.get(i) else {
                continue;
            };
            match thread.send(conn) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => {
                    tracing::error!(thread = i, "session thread gone");
                    conn = back;
                }
            }
        }
        tracing::error!(%peer, "no session thread left; client connection dropped");
    }
}

/// One session thread per core but one, and at least one.
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

/// One session thread: runs the sessions it is given until no more come and they have ended.
async fn serve(gw: Gateway, mut accepted: mpsc::UnboundedReceiver<Accepted>) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            next = accepted.recv() => match next {
                Some((tcp, peer)) => match tokio::net::TcpStream::from_std(tcp) {
                    Ok(tcp) => {
                        sessions.spawn(super::session::run(gw.clone(), tcp, peer));
                    }
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot register a client connection");
                    }
                },
                None => break,
            },
            Some(done) = sessions.join_next(), if !sessions.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a client session panicked");
                }
            }
        }
    }
    while sessions.join_next().await.is_some() {}
}
