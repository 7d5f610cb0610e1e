//! The uploader: reads the spool in order, ships events to the control plane in
//! batches over `PublishAudit`, and deletes a segment once everything in it is
//! acknowledged.
//!
//! - A final event is uploaded as it is.
//! - An intent (a statement about to be forwarded) is held in memory until its
//!   final event or its cancel is read; the final is then what is uploaded, and
//!   the intent's segment waits for that final's acknowledgement.
//! - An intent left without either once its session is no longer live in this
//!   process (its end was read, or it belongs to an earlier run of the gateway
//!   and every recovered segment has been read) is an orphan: the statement may
//!   or may not have run. It is uploaded as the statement with the error
//!   [`ORPHAN_ERROR`], so the control plane has exactly one row per statement.
//!
//! Segments are deleted oldest first only. So when the gateway restarts, an
//! intent still in the spool always finds its final or cancel after it, if one
//! was written; and events uploaded before the restart are resent, which the
//! control plane ignores (it stores `(session_id, seq)` once).

use super::record::{EventKey, Kind};
use super::spool::{Spool, read_records};
use crate::control::{ControlClient, EncodedAuditBatch};
use bytes::Bytes;
use countersign_proto::v1 as pb;
use prost::Message as _;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// Most events sent in one batch.
const BATCH_EVENTS: usize = 1_000;
/// Most event bytes in one batch (the control plane takes messages up to 64 MiB).
const BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How long the uploader waits to fill a batch once it has one event.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// How long an idle uploader waits before looking at the spool again anyway.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Bytes read from a segment at a time.
const READ_BUDGET: usize = 1024 * 1024;
/// The error an orphaned intent is uploaded with.
pub const ORPHAN_ERROR: &str = "gateway stopped before the outcome was known";

struct Segment {
    number: u64,
    /// Records in it not yet acknowledged (or, for intents, not yet resolved).
    pending: u64,
    /// Everything in it has been read.
    read: bool,
}

/// An intent waiting for its outcome: kept as its encoded event, because almost every intent
/// is resolved by its final event and never needed again; only an orphan is decoded.
struct Intent {
    segment: u64,
    event: Vec<u8>,
}

/// Where the uploader reads.
struct Cursor {
    segment: u64,
    file: File,
    offset: u64,
}

/// The batch being filled: the events to send, as the spool holds them (encoded
/// `pb::AuditEvent`s), and for each the segments whose pending count drops once it is
/// acknowledged.
#[derive(Default)]
struct Batch {
    events: Vec<Bytes>,
    segments: Vec<[Option<u64>; 2]>,
    bytes: usize,
    /// When (Unix µs) the oldest event was written; 0 when none says.
    oldest_at: i64,
}

impl Batch {
    fn push(&mut self, event: Bytes, at: i64, segments: [Option<u64>; 2]) {
        self.bytes += event.len();
        self.events.push(event);
        self.segments.push(segments);
        if at > 0 && (self.oldest_at == 0 || at < self.oldest_at) {
            self.oldest_at = at;
        }
    }

    fn full(&self) -> bool {
        self.events.len() >= BATCH_EVENTS || self.bytes >= BATCH_BYTES
    }
}

/// What the uploader has done, for the gateway's metrics.
pub struct Progress {
    /// Events the control plane has acknowledged (the gateway's
    /// `audit_events_uploaded` counter).
    pub uploaded: prometheus_client::metrics::counter::Counter,
    /// When (Unix µs) the oldest event of the batch being sent was written; 0 while no
    /// batch is waiting for its acknowledgement.
    pub waiting_since_us: AtomicI64,
}

impl Progress {
    /// How long the oldest event not yet acknowledged has waited; zero when the
    /// uploader waits for nothing. It keeps growing while the control plane is
    /// unreachable.
    pub fn lag(&self) -> Duration {
        match self.waiting_since_us.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_micros(u64::try_from(now_us() - since).unwrap_or(0)),
        }
    }
}

fn now_us() -> i64 {
    super::unix_us(SystemTime::now())
}

struct Uploader {
    spool: Arc<Spool>,
    segments: VecDeque<Segment>,
    /// Recovered segments not yet opened for reading.
    to_read: VecDeque<u64>,
    /// The next segment to read once the recovered ones are.
    first_new: u64,
    /// The first segment this process wrote: older ones hold an earlier run's events.
    recovery_end: u64,
    cursor: Option<Cursor>,
    intents: HashMap<(String, u64), Intent>,
}

/// Ships the spool's events to the control plane, forever.
pub async fn run(spool: Arc<Spool>, client: ControlClient, progress: Arc<Progress>) {
    let mut written = spool.written();
    let first_new = written.borrow().segment;
    let mut up = Uploader {
        to_read: spool.recovered().iter().copied().collect(),
        spool,
        segments: VecDeque::new(),
        first_new,
        recovery_end: first_new,
        cursor: None,
        intents: HashMap::new(),
    };
    let mut uploader = client.audit_uploader();
    let mut batch_id = 0u64;
    loop {
        let mut batch = Batch::default();
        let mut deadline = None;
        loop {
            up.read(&mut batch);
            up.orphans(&mut batch);
            if batch.full() {
                break;
            }
            if up.caught_up() {
                if batch.events.is_empty() {
                    // Nothing to send. A segment may have become deletable without a new
                    // acknowledgement (read to its end after the writer moved on, or its last
                    // intent cancelled): delete it now rather than after the next batch.
                    up.delete_acknowledged();
                    // Then wait for the writer.
                    let _ = tokio::time::timeout(IDLE_WAIT, written.changed()).await;
                    continue;
                }
                // A batch has begun: let the writers fill the spool until the batch is due
                // and read it all at once, rather than waking on every write (about one per
                // statement) and reading each with its own read(2).
                let at = *deadline.get_or_insert(tokio::time::Instant::now() + BATCH_WAIT);
                if tokio::time::Instant::now() >= at {
                    break;
                }
                tokio::time::sleep_until(at).await;
                written.mark_unchanged();
            }
        }
        batch_id += 1;
        let events = std::mem::take(&mut batch.events);
        let oldest = match batch.oldest_at {
            0 => now_us(),
            at => at,
        };
        progress.waiting_since_us.store(oldest, Ordering::Relaxed);
        let sent = events.len() as u64;
        uploader
            .send_until_acked(EncodedAuditBatch {
                batch_id,
                events,
                trace_context: Default::default(),
            })
            .await;
        progress.waiting_since_us.store(0, Ordering::Relaxed);
        progress.uploaded.inc_by(sent);
        for s in batch.segments.iter().flat_map(|s| s.iter().flatten()) {
            up.resolve(*s);
        }
        up.delete_acknowledged();
    }
}

impl Uploader {
    /// Whether everything written so far has been read.
    fn caught_up(&self) -> bool {
        let w = self.spool.position();
        match &self.cursor {
            Some(c) => c.segment == w.segment && c.offset >= w.offset,
            // A segment could not be opened: wait, then try again.
            None => true,
        }
    }

    /// Reads records into `batch` until it is full or nothing more is written.
    fn read(&mut self, batch: &mut Batch) {
        while !batch.full() {
            let w = self.spool.position();
            let Some(cursor) = self.cursor_mut() else {
                return;
            };
            let sealed = cursor.segment < w.segment;
            let end = if sealed {
                match cursor.file.metadata() {
                    Ok(m) => m.len(),
                    Err(e) => {
                        tracing::error!(error = %e, segment = cursor.segment, "cannot read audit spool segment");
                        return;
                    }
                }
            } else {
                w.offset
            };
            if cursor.offset >= end {
                if !sealed {
                    return;
                }
                let n = cursor.segment;
                self.next_segment(n);
                continue;
            }
            let chunk = match read_records(&mut cursor.file, cursor.offset, end, READ_BUDGET) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, segment = cursor.segment, "cannot read audit spool segment");
                    return;
                }
            };
            let segment = cursor.segment;
            cursor.offset = chunk.end;
            if let Some(why) = chunk.bad {
                // Checked at open and written whole since: only damage under us gets here.
                tracing::error!(
                    segment,
                    offset = chunk.end,
                    reason = why,
                    "corrupt audit spool record; skipping the rest of the segment"
                );
                cursor.offset = end;
            }
            for (kind, event) in chunk.records() {
                if let Err(e) = self.take(segment, kind, event, batch) {
                    // Its CRC was good, so only a bug or damage under us gets here.
                    tracing::error!(segment, error = %e, "undecodable audit spool record; skipping it");
                }
            }
        }
    }

    /// The cursor, opening the next segment to read if there is none.
    fn cursor_mut(&mut self) -> Option<&mut Cursor> {
        if self.cursor.is_none() {
            let n = self.to_read.front().copied().unwrap_or(self.first_new);
            let path = self.spool.segment_path(n);
            match File::open(&path) {
                Ok(file) => {
                    self.to_read.pop_front();
                    self.segments.push_back(Segment {
                        number: n,
                        pending: 0,
                        read: false,
                    });
                    self.cursor = Some(Cursor {
                        segment: n,
                        file,
                        offset: 0,
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, segment = %path.display(), "cannot open audit spool segment");
                    return None;
                }
            }
        }
        self.cursor.as_mut()
    }

    /// Segment `n` is read to its end; the next one is read from now on.
    fn next_segment(&mut self, n: u64) {
        if let Some(s) = self.segments.iter_mut().find(|s| s.number == n) {
            s.read = true;
        }
        if self.to_read.is_empty() && n >= self.first_new {
            self.first_new = n + 1;
        }
        self.cursor = None;
    }

    /// Takes one record read from `segment`: a final event goes into `batch` (with the segment
    /// of its intent), an intent waits for its outcome, a cancel drops its intent.
    fn take(
        &mut self,
        segment: u64,
        kind: Kind,
        event: Bytes,
        batch: &mut Batch,
    ) -> Result<(), prost::DecodeError> {
        match kind {
            Kind::Intent => {
                let key = EventKey::decode(event.as_ref())?;
                self.count(segment);
                let intent = Intent {
                    segment,
                    event: event.to_vec(),
                };
                self.intents.insert((key.session_id, key.seq), intent);
            }
            Kind::Cancel => {
                let key = EventKey::decode(event.as_ref())?;
                if let Some(intent) = self.intents.remove(&(key.session_id, key.seq)) {
                    self.resolve(intent.segment);
                }
            }
            Kind::Final => {
                // Sent as written: only the key is decoded here (the control plane decodes
                // and checks the whole event). A record whose CRC holds was encoded from a
                // whole event, by this process or, for recovered segments, checked event by
                // event when the spool was opened (`spool::repair`).
                let key = EventKey::decode(event.as_ref())?;
                if key.session_ended.is_some() {
                    self.spool.session_ended(&key.session_id);
                }
                self.count(segment);
                let intent = self
                    .intents
                    .remove(&(key.session_id, key.seq))
                    .map(|i| i.segment);
                batch.push(event, key.at, [Some(segment), intent]);
            }
        }
        Ok(())
    }

    /// Intents whose statement's outcome will never be written.
    fn orphans(&mut self, batch: &mut Batch) {
        let recovering = !self.to_read.is_empty()
            || self
                .cursor
                .as_ref()
                .is_some_and(|c| c.segment < self.recovery_end);
        if recovering || self.intents.is_empty() {
            // Events of an earlier run may still be ahead in recovered segments.
            return;
        }
        let orphaned: Vec<(String, u64)> = self
            .intents
            .keys()
            .filter(|(session, _)| !self.spool.is_live(session))
            .cloned()
            .collect();
        for key in orphaned {
            let Some(Intent { segment, event }) = self.intents.remove(&key) else {
                continue;
            };
            let mut event = match pb::AuditEvent::decode(event.as_slice()) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(session = %key.0, seq = key.1, error = %e, "undecodable audit intent; dropping it");
                    self.resolve(segment);
                    continue;
                }
            };
            if let Some(pb::audit_event::Event::Statement(s)) = event.event.as_mut()
                && s.error.is_empty()
            {
                s.error = ORPHAN_ERROR.to_owned();
            }
            tracing::warn!(session = %key.0, seq = key.1, "statement without an outcome in the audit spool; uploading it as outcome unknown");
            let at = event.at;
            batch.push(event.encode_to_vec().into(), at, [Some(segment), None]);
        }
    }

    fn count(&mut self, segment: u64) {
        if let Some(s) = self.segments.iter_mut().find(|s| s.number == segment) {
            s.pending += 1;
        }
    }

    fn resolve(&mut self, segment: u64) {
        if let Some(s) = self.segments.iter_mut().find(|s| s.number == segment) {
            s.pending = s.pending.saturating_sub(1);
        }
    }

    /// Deletes the oldest segments while they are read and fully acknowledged.
    fn delete_acknowledged(&mut self) {
        while let Some(s) = self.segments.front() {
            if !s.read || s.pending > 0 {
                return;
            }
            let n = s.number;
            if let Err(e) = self.spool.delete_segment(n) {
                tracing::error!(error = %e, segment = n, "cannot delete an acknowledged audit spool segment");
                return;
            }
            tracing::debug!(segment = n, "audit spool segment acknowledged and deleted");
            self.segments.pop_front();
        }
    }
}
