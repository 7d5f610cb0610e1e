//! The durable spool: numbered segment files of framed records (see `record`).
//!
//! - **Append** writes one record with one `write(2)` straight into the current
//!   segment, under a short lock. Once `append` returns, the record survives the
//!   gateway process dying; it survives the machine crashing only once an fsync
//!   covered it.
//! - **Hold**: a statement's outcome (or the cancel of its intent), whose intent is
//!   already written, waits in memory and goes out in the same `write(2)` as the
//!   next record appended, or at the next group-commit tick (about `fsync_interval`
//!   after the last fsync ended), whichever comes first. A busy session so pays one write per statement, not
//!   two. Held records keep their order against every later record. The price: a
//!   process killed in that window loses the held outcomes, and their statements
//!   are reported as "outcome unknown" from their intents (never lost). Denials and
//!   session starts and ends, which have no intent, are always appended.
//! - **Group commit**: a background task fsyncs every `fsync_interval` what was
//!   written since the last fsync, or at once when someone waits for it
//!   ([`Spool::wait_synced`], used by `strict_audit` resources).
//! - **Bounded**: appends that admit new work (`Admit::Checked`) fail with
//!   [`SpoolError::Full`] once the segments hold `max_bytes`. Records that
//!   complete admitted work (a statement's outcome, a session's end) are always
//!   written, so a full spool never loses what already ran; there are at most a
//!   few per statement in flight.
//! - **Recovery**: [`Spool::open`] checks every record of every segment; a torn
//!   or corrupt record and whatever follows it in its segment are truncated away,
//!   with a warning. New records go into a new segment.
//!
//! Segments are deleted by the uploader (`upload`) once every record in them is
//! acknowledged, oldest first.
//!
//! Not guaranteed: records written but not yet fsynced are lost if the machine
//! (not only the process) dies, unless the resource is `strict_audit`.

use super::record::{self, Decoded, Kind};
use countersign_proto::v1 as pb;
use prost::Message as _;
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

const SUFFIX: &str = ".seg";
/// Held records are written once they reach this many bytes, whatever comes next.
const HELD_MAX: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("audit spool full ({used} of {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("audit spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit record too large ({0} bytes)")]
    TooLarge(usize),
    #[error("audit spool unusable after an earlier write error")]
    Broken,
    #[error("audit spool {0} is in use by another gateway process")]
    InUse(PathBuf),
}

/// Whether an append is subject to the size bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// New work: refused when the spool is full.
    Checked,
    /// Completes work already admitted: always written.
    Always,
}

/// How far the writer has got: records are complete up to `offset` of `segment`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub segment: u64,
    pub offset: u64,
}

/// Spool settings.
#[derive(Clone, Debug)]
pub struct SpoolSettings {
    /// Where the segment files live.
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub fsync_interval: Duration,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
}

impl SpoolSettings {
    /// The largest segment: 16 MiB.
    pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

    /// Settings with segments of 16 MiB, or an eighth of `max_bytes` if smaller, so
    /// that a full spool always has closed segments to free once they are acknowledged.
    pub fn new(dir: PathBuf, max_bytes: u64, fsync_interval: Duration) -> Self {
        Self {
            dir,
            max_bytes,
            fsync_interval,
            segment_bytes: Self::SEGMENT_BYTES.min(max_bytes / 8).max(4096),
        }
    }
}

struct Writer {
    segment: u64,
    file: Arc<File>,
    offset: u64,
    /// Records appended since open: the position fsync waiters wait for.
    records: u64,
    /// Closed segments not fsynced yet.
    unsynced: Vec<Arc<File>>,
    /// A segment was created since the directory was last fsynced.
    dir_dirty: bool,
    /// A write failed and could not be undone: the segment may hold a torn record.
    broken: bool,
    /// Records taken from [`Held`] and not written yet (only after a failed write, between
    /// calls), and how many.
    out: Vec<u8>,
    out_records: u64,
}

/// Encoded records held for the next write (see the module docs), and how many. Behind a
/// lock of their own, taken only to copy bytes in or out, so that holding a record never
/// waits for a write in progress.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    records: u64,
}

/// The spool. Cheap to share through an `Arc`.
pub struct Spool {
    settings: SpoolSettings,
    writer: Mutex<Writer>,
    held: Mutex<Held>,
    /// Bytes in all segment files.
    used: AtomicU64,
    written: watch::Sender<Written>,
    /// Records covered by an fsync.
    synced: watch::Sender<u64>,
    sync_now: Notify,
    /// Segments that held records when the spool was opened.
    recovered: Vec<u64>,
    /// Sessions of this process that have not ended (as far as the uploader has read).
    live: Mutex<HashSet<String>>,
    /// Held (locked) while the spool is open.
    _lock: File,
}

impl Spool {
    /// Opens (creating) the spool directory, checks and repairs the segments in
    /// it, and starts a new segment for this process.
    pub fn open(settings: SpoolSettings) -> Result<Arc<Self>, SpoolError> {
        let dir = settings.dir.clone();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SpoolError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // One process per spool: two writers would upload and delete each other's segments.
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(SpoolError::InUse(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let mut used = 0;
        let mut recovered = Vec::new();
        for n in list_segments(&dir).map_err(io(&dir))? {
            let path = segment_path(&dir, n);
            let len = repair(&path).map_err(io(&path))?;
            if len == 0 {
                std::fs::remove_file(&path).map_err(io(&path))?;
            } else {
                used += len;
                recovered.push(n);
            }
        }
        let segment = recovered.last().map_or(1, |n| n + 1);
        let path = segment_path(&dir, segment);
        let file = create_segment(&path).map_err(io(&path))?;
        if !recovered.is_empty() {
            tracing::info!(segments = recovered.len(), bytes = used, dir = %dir.display(), "audit spool holds events from an earlier run; uploading them");
        }
        Ok(Arc::new(Self {
            settings,
            writer: Mutex::new(Writer {
                segment,
                file: Arc::new(file),
                offset: 0,
                records: 0,
                unsynced: Vec::new(),
                dir_dirty: true,
                broken: false,
                out: Vec::new(),
                out_records: 0,
            }),
            held: Mutex::default(),
            used: AtomicU64::new(used),
            written: watch::Sender::new(Written { segment, offset: 0 }),
            synced: watch::Sender::new(0),
            sync_now: Notify::new(),
            recovered,
            live: Mutex::default(),
            _lock: lock,
        }))
    }

    /// Appends one record, and any held before it, in one write; returns its number,
    /// for [`Self::wait_synced`].
    pub fn append(
        &self,
        kind: Kind,
        event: &pb::AuditEvent,
        admit: Admit,
    ) -> Result<u64, SpoolError> {
        // Encoded before the lock: every session thread appends here.
        let buf = encode(kind, event)?;
        let mut w = self.writer.lock().map_err(|_| SpoolError::Broken)?;
        if w.broken {
            return Err(SpoolError::Broken);
        }
        self.take_held(&mut w)?;
        let used = self.used.load(Ordering::Acquire);
        let mark = w.out.len();
        if admit == Admit::Checked && used + (mark + buf.len()) as u64 > self.settings.max_bytes {
            return Err(SpoolError::Full {
                used,
                max: self.settings.max_bytes,
            });
        }
        w.out.extend_from_slice(&buf);
        w.out_records += 1;
        if let Err(e) = self.write_out(&mut w) {
            // Not written: the new record is taken back; the held ones wait for the next try.
            w.out.truncate(mark);
            w.out_records -= 1;
            return Err(e);
        }
        Ok(w.records)
    }

    /// Holds a record that completes a statement whose intent is written: it goes out
    /// with the next append, or at the next group-commit tick. Never refused for space;
    /// an error means the record was not taken.
    pub fn hold(&self, kind: Kind, event: &pb::AuditEvent) -> Result<(), SpoolError> {
        let buf = encode(kind, event)?;
        let many = {
            let mut held = self.held.lock().map_err(|_| SpoolError::Broken)?;
            held.bytes.extend_from_slice(&buf);
            held.records += 1;
            held.bytes.len() >= HELD_MAX
        };
        // Many sessions finishing at once: do not let the buffer grow without bound. The
        // record is taken either way; what a failed write leaves is tried again.
        if many && let Err(e) = self.flush() {
            tracing::error!(error = %e, "cannot write held audit records to the spool; will retry");
        }
        Ok(())
    }

    /// Writes what is held now (the group-commit task does this every tick; call it
    /// before the process exits).
    pub fn flush(&self) -> Result<(), SpoolError> {
        let mut w = self.writer.lock().map_err(|_| SpoolError::Broken)?;
        if w.broken {
            return Err(SpoolError::Broken);
        }
        self.take_held(&mut w)?;
        self.write_out(&mut w)
    }

    /// Moves the held records behind those the writer still has to write.
    fn take_held(&self, w: &mut Writer) -> Result<(), SpoolError> {
        let mut held = self.held.lock().map_err(|_| SpoolError::Broken)?;
        if held.records == 0 {
            return Ok(());
        }
        if w.out.is_empty() {
            std::mem::swap(&mut w.out, &mut held.bytes);
        } else {
            w.out.append(&mut held.bytes);
        }
        w.out_records += std::mem::take(&mut held.records);
        Ok(())
    }

    /// Writes the writer's records with one `write(2)`. On error nothing is taken as
    /// written and the records stay to be written.
    fn write_out(&self, w: &mut Writer) -> Result<(), SpoolError> {
        if w.out.is_empty() {
            return Ok(());
        }
        let len = w.out.len() as u64;
        if w.offset > 0 && w.offset + len > self.settings.segment_bytes {
            self.rotate(w)?;
        }
        if let Err(source) = (&*w.file).write_all(&w.out) {
            // Take back a partial write so the segment stays readable.
            if w.file.set_len(w.offset).is_err() {
                w.broken = true;
            }
            return Err(SpoolError::Io {
                path: segment_path(&self.settings.dir, w.segment),
                source,
            });
        }
        w.offset += len;
        w.records += std::mem::take(&mut w.out_records);
        w.out.clear();
        if w.out.capacity() > HELD_MAX {
            w.out.shrink_to(HELD_MAX);
        }
        self.used.fetch_add(len, Ordering::AcqRel);
        self.written.send_replace(Written {
            segment: w.segment,
            offset: w.offset,
        });
        Ok(())
    }

    fn rotate(&self, w: &mut Writer) -> Result<(), SpoolError> {
        let segment = w.segment + 1;
        let path = segment_path(&self.settings.dir, segment);
        let file = create_segment(&path).map_err(|source| SpoolError::Io { path, source })?;
        let old = std::mem::replace(&mut w.file, Arc::new(file));
        w.unsynced.push(old);
        w.segment = segment;
        w.offset = 0;
        w.dir_dirty = true;
        Ok(())
    }

    /// Waits until an fsync covers record `n` (asking for one at once).
    pub async fn wait_synced(&self, n: u64) {
        let mut rx = self.synced.subscribe();
        if *rx.borrow() >= n {
            return;
        }
        self.sync_now.notify_one();
        let _ = rx.wait_for(|s| *s >= n).await;
    }

    /// The group-commit task: fsyncs what was written, every interval or on demand.
    pub async fn run_fsync(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.fsync_interval) => {}
                _ = self.sync_now.notified() => {}
            }
            let (files, target, dir_dirty) = {
                let Ok(mut w) = self.writer.lock() else {
                    return;
                };
                if !w.broken
                    && let Err(e) = self.take_held(&mut w).and_then(|()| self.write_out(&mut w))
                {
                    tracing::error!(error = %e, "cannot write held audit records to the spool; will retry");
                }
                if w.records == *self.synced.borrow() && !w.dir_dirty {
                    continue;
                }
                let mut files = std::mem::take(&mut w.unsynced);
                files.push(w.file.clone());
                let dir_dirty = std::mem::replace(&mut w.dir_dirty, false);
                (files, w.records, dir_dirty)
            };
            let dir = self.settings.dir.clone();
            let synced = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                for f in &files {
                    f.sync_data()?;
                }
                if dir_dirty {
                    File::open(&dir)?.sync_all()?;
                }
                Ok(())
            })
            .await;
            match synced {
                Ok(Ok(())) => {
                    self.synced.send_replace(target);
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "audit spool fsync failed; will retry");
                    if let Ok(mut w) = self.writer.lock() {
                        w.dir_dirty |= dir_dirty;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => tracing::error!(error = %e, "audit spool fsync task failed"),
            }
        }
    }

    /// Follows the writer (for the uploader).
    pub fn written(&self) -> watch::Receiver<Written> {
        self.written.subscribe()
    }

    /// The writer's position now.
    pub fn position(&self) -> Written {
        *self.written.borrow()
    }

    /// Segments found at open, oldest first.
    pub fn recovered(&self) -> &[u64] {
        &self.recovered
    }

    pub fn segment_path(&self, n: u64) -> PathBuf {
        segment_path(&self.settings.dir, n)
    }

    /// Removes a fully acknowledged segment.
    pub fn delete_segment(&self, n: u64) -> std::io::Result<()> {
        let path = self.segment_path(n);
        let len = std::fs::metadata(&path)?.len();
        std::fs::remove_file(&path)?;
        self.used.fetch_sub(len, Ordering::AcqRel);
        Ok(())
    }

    /// Bytes in all segments.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// A session of this process started: its intents are not orphans.
    pub fn session_started(&self, session_id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.insert(session_id.to_owned());
        }
    }

    /// The uploader read a session's end.
    pub(super) fn session_ended(&self, session_id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(session_id);
        }
    }

    pub(super) fn is_live(&self, session_id: &str) -> bool {
        self.live
            .lock()
            .map(|l| l.contains(session_id))
            .unwrap_or(false)
    }
}

/// One record's bytes, refused when over [`record::MAX_RECORD`].
fn encode(kind: Kind, event: &pb::AuditEvent) -> Result<Vec<u8>, SpoolError> {
    let mut buf = Vec::new();
    record::encode(kind, event, &mut buf);
    if buf.len() > record::MAX_RECORD {
        return Err(SpoolError::TooLarge(buf.len()));
    }
    Ok(buf)
}

impl Drop for Spool {
    /// Held records are written when the spool closes in order.
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::error!(error = %e, "held audit records lost: cannot write them to the spool");
        }
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}{SUFFIX}"))
}

fn create_segment(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .read(true)
        .open(path)
}

/// Segment numbers in `dir`, ascending.
fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(SUFFIX))
            .and_then(|s| s.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Checks every record of a segment; truncates a torn or corrupt tail. Returns
/// the segment's length afterwards.
fn repair(path: &Path) -> std::io::Result<u64> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    let mut good = 0;
    let bad = loop {
        match data.get(good..).map(record::decode) {
            None => break None,
            Some(Decoded::Record { len, event, .. }) => {
                if pb::AuditEvent::decode(event).is_err() {
                    break Some("undecodable event");
                }
                good += len;
            }
            Some(Decoded::Incomplete(_)) if good == data.len() => break None,
            Some(Decoded::Incomplete(_)) => break Some("torn record"),
            Some(Decoded::Bad(why)) => break Some(why),
        }
    };
    if let Some(why) = bad {
        tracing::warn!(
            segment = %path.display(),
            offset = good,
            dropped_bytes = data.len() - good,
            reason = why,
            "audit spool: truncating a torn or corrupt tail"
        );
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(good as u64)?;
        f.sync_all()?;
    }
    Ok(good as u64)
}

/// What [`read_records`] found.
pub struct Chunk {
    /// The bytes read.
    data: bytes::Bytes,
    /// The whole records: each one's kind and where its event's bytes are in `data`.
    spans: Vec<(Kind, std::ops::Range<usize>)>,
    /// The offset after the last whole record read.
    pub end: u64,
    /// Reading stopped at a corrupt record.
    pub bad: Option<&'static str>,
}

impl Chunk {
    /// The records, each as its kind and its (undecoded) `pb::AuditEvent` bytes, shared with
    /// the chunk rather than copied.
    pub fn records(&self) -> impl Iterator<Item = (Kind, bytes::Bytes)> + '_ {
        self.spans
            .iter()
            .filter(|(_, span)| span.end <= self.data.len())
            .map(|(kind, span)| (*kind, self.data.slice(span.clone())))
    }
}

/// Reads the whole records of a segment in `[from, to)`, about `budget` bytes
/// of them (more when the first record is bigger).
pub fn read_records(file: &mut File, from: u64, to: u64, budget: usize) -> std::io::Result<Chunk> {
    use std::io::{Seek, SeekFrom};
    let available = usize::try_from(to.saturating_sub(from)).unwrap_or(usize::MAX);
    let mut want = available.min(budget);
    loop {
        let mut data = vec![0; want];
        file.seek(SeekFrom::Start(from))?;
        let mut filled = 0;
        while filled < want {
            match file.read(&mut data[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        data.truncate(filled);
        let mut spans = Vec::new();
        let mut bad = None;
        let mut pos = 0;
        let mut grew = false;
        while pos < data.len() {
            match record::decode(&data[pos..]) {
                Decoded::Record { kind, event, len } => {
                    // The event's bytes end where the record does.
                    let end = pos + len;
                    spans.push((kind, end - event.len()..end));
                    pos = end;
                }
                Decoded::Incomplete(need) => {
                    if pos == 0 && need > want && need <= available {
                        want = need;
                        grew = true;
                    }
                    break;
                }
                Decoded::Bad(why) => {
                    bad = Some(why);
                    break;
                }
            }
        }
        if grew {
            // The first record is bigger than the budget: read it whole.
            continue;
        }
        return Ok(Chunk {
            data: data.into(),
            spans,
            end: from + pos as u64,
            bad,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, max_bytes: u64) -> SpoolSettings {
        SpoolSettings {
            dir: dir.to_owned(),
            max_bytes,
            fsync_interval: Duration::from_millis(5),
            segment_bytes: 256,
        }
    }

    fn event(seq: u64) -> pb::AuditEvent {
        pb::AuditEvent {
            session_id: "s".into(),
            seq,
            at: 1,
            event: None,
        }
    }

    fn read_all(spool: &Spool, n: u64) -> Vec<(Kind, u64)> {
        let path = spool.segment_path(n);
        let mut f = File::open(&path).unwrap();
        let len = f.metadata().unwrap().len();
        let chunk = read_records(&mut f, 0, len, 1 << 20).unwrap();
        assert!(chunk.bad.is_none());
        chunk
            .records()
            .map(|(k, e)| (k, pb::AuditEvent::decode(e).unwrap().seq))
            .collect()
    }

    #[test]
    fn appends_rotate_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(settings(dir.path(), 1 << 20)).unwrap();
        for seq in 0..40 {
            spool
                .append(Kind::Final, &event(seq), Admit::Checked)
                .unwrap();
        }
        let last = spool.position().segment;
        assert!(last > 1, "segments rotate");
        let used = spool.used();
        drop(spool);
        let spool = Spool::open(settings(dir.path(), 1 << 20)).unwrap();
        assert_eq!(spool.recovered(), (1..=last).collect::<Vec<_>>());
        assert_eq!(spool.used(), used);
        assert_eq!(spool.position().segment, last + 1);
        let seqs: Vec<u64> = (1..=last)
            .flat_map(|n| read_all(&spool, n))
            .map(|(_, s)| s)
            .collect();
        assert_eq!(seqs, (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn one_process_per_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(settings(dir.path(), 1 << 20)).unwrap();
        assert!(matches!(
            Spool::open(settings(dir.path(), 1 << 20)),
            Err(SpoolError::InUse(_))
        ));
        drop(spool);
        Spool::open(settings(dir.path(), 1 << 20)).unwrap();
    }

    #[test]
    fn a_torn_tail_is_truncated_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(settings(dir.path(), 1 << 20)).unwrap();
        for seq in 0..3 {
            spool
                .append(Kind::Intent, &event(seq), Admit::Checked)
                .unwrap();
        }
        drop(spool);
        let path = segment_path(dir.path(), 1);
        let whole = std::fs::metadata(&path).unwrap().len();
        // A torn write: half a record more.
        let mut extra = Vec::new();
        record::encode(Kind::Final, &event(3), &mut extra);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&extra[..extra.len() / 2]).unwrap();
        drop(f);
        let spool = Spool::open(settings(dir.path(), 1 << 20)).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
        assert_eq!(read_all(&spool, 1).len(), 3);

        // A corrupt byte in the middle: that record and the rest of the segment go.
        drop(spool);
        let mut data = std::fs::read(&path).unwrap();
        let one = usize::try_from(whole).unwrap() / 3;
        data[one + 10] ^= 1;
        std::fs::write(&path, &data).unwrap();
        let spool = Spool::open(settings(dir.path(), 1 << 20)).unwrap();
        assert_eq!(read_all(&spool, 1), vec![(Kind::Intent, 0)]);
    }

    #[test]
    fn a_full_spool_refuses_new_work_but_not_completions() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path(), 200);
        s.segment_bytes = 64;
        let spool = Spool::open(s).unwrap();
        let mut n = 0;
        while spool
            .append(Kind::Intent, &event(n), Admit::Checked)
            .is_ok()
        {
            n += 1;
        }
        assert!(n > 0);
        assert!(matches!(
            spool.append(Kind::Intent, &event(n), Admit::Checked),
            Err(SpoolError::Full { .. })
        ));
        spool.append(Kind::Final, &event(0), Admit::Always).unwrap();
        // Deleting acknowledged segments makes room again.
        let last = spool.position().segment;
        for s in 1..last {
            spool.delete_segment(s).unwrap();
        }
        assert!(last > 2);
        spool
            .append(Kind::Intent, &event(n), Admit::Checked)
            .unwrap();
    }

    #[test]
    fn held_records_go_out_in_front_of_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(settings(dir.path(), 1 << 20)).unwrap();
        spool
            .append(Kind::Intent, &event(1), Admit::Checked)
            .unwrap();
        let before = spool.position();
        spool.hold(Kind::Final, &event(1)).unwrap();
        spool.hold(Kind::Cancel, &event(2)).unwrap();
        assert_eq!(spool.position(), before, "held, not written");
        let n = spool
            .append(Kind::Intent, &event(3), Admit::Checked)
            .unwrap();
        assert_eq!(n, 4, "held records are numbered in order");
        assert_eq!(
            read_all(&spool, 1),
            vec![
                (Kind::Intent, 1),
                (Kind::Final, 1),
                (Kind::Cancel, 2),
                (Kind::Intent, 3)
            ]
        );
        // Dropping the spool writes what is still held.
        spool.hold(Kind::Final, &event(3)).unwrap();
        drop(spool);
        let spool = Spool::open(settings(dir.path(), 1 << 20)).unwrap();
        assert_eq!(read_all(&spool, 1).last(), Some(&(Kind::Final, 3)));
    }

    #[test]
    fn a_refused_append_leaves_held_records_held() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(settings(dir.path(), 120)).unwrap();
        while spool
            .append(Kind::Intent, &event(0), Admit::Checked)
            .is_ok()
        {}
        spool.hold(Kind::Final, &event(7)).unwrap();
        assert!(matches!(
            spool.append(Kind::Intent, &event(8), Admit::Checked),
            Err(SpoolError::Full { .. })
        ));
        let before = spool.position();
        spool.flush().unwrap();
        assert!(spool.position() != before);
        let last = spool.position().segment;
        let all: Vec<(Kind, u64)> = (1..=last).flat_map(|n| read_all(&spool, n)).collect();
        assert_eq!(all.last(), Some(&(Kind::Final, 7)));
        assert!(!all.contains(&(Kind::Intent, 8)));
    }

    #[tokio::test]
    async fn the_group_commit_tick_writes_and_syncs_held_records() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(settings(dir.path(), 1 << 20)).unwrap();
        tokio::spawn(spool.clone().run_fsync());
        spool.hold(Kind::Final, &event(5)).unwrap();
        let mut synced = spool.synced.subscribe();
        tokio::time::timeout(Duration::from_secs(5), synced.wait_for(|s| *s >= 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read_all(&spool, 1), vec![(Kind::Final, 5)]);
    }

    #[tokio::test]
    async fn strict_waiters_get_an_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path(), 1 << 20);
        // Long interval: waiting must not depend on it.
        s.fsync_interval = Duration::from_secs(3600);
        let spool = Spool::open(s).unwrap();
        tokio::spawn(spool.clone().run_fsync());
        let n = spool
            .append(Kind::Intent, &event(1), Admit::Checked)
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), spool.wait_synced(n))
            .await
            .unwrap();
        assert!(*spool.synced.borrow() >= n);
    }
}
