//! Verify: walks checkpoints and events and names every row that does not
//! match what was chained.
//!
//! 1. Checkpoints, in number order: each must carry its HMAC, follow the one
//!    before without a gap, and chain to its hash. The newest periodic entry
//!    per session is the head that must still be stored; purge entries say
//!    which seqs may be gone.
//! 2. Events, in `(session_id, seq)` pages (keyset pagination: memory is one
//!    page plus per-session state, not the log). Each row must verify on its
//!    own (its HMAC covers its `prev_hash`), and its link must resolve: the
//!    event it names as previous must be stored with that hash, or purged.
//! 3. Per session, rows that fail are classified: a row that verifies under
//!    another failing row's seq was **reordered**; one that a successor, a
//!    checkpoint or the session head points at was **modified**; any other was
//!    **inserted**. A link to a seq that is gone is **missing**, as is a
//!    checkpointed head that is gone (a deleted tail, or a whole session).
//!
//! Memory is bounded per session except for the map of sessions named in
//! checkpoints and heads (one small entry per session).
//!
//! Not guaranteed: events stored since the last checkpoint are covered by the
//! `audit_heads` table only, which is not signed; deleting the newest events of
//! a session *and* rewinding its head before the next checkpoint goes
//! unnoticed. Anyone holding the audit key can rewrite the chain consistently.

use super::super::entity::{audit_checkpoint, audit_event, audit_head};
use super::super::{Store, StoreError};
use super::chain::event_hash;
use super::checkpoint::{CheckpointEntry, checkpoint_hash};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// Events read per page.
const PAGE: u64 = 1000;
/// Findings reported at most; the count goes on.
const MAX_FINDINGS: usize = 1000;
/// Failing rows kept per session for classification.
const MAX_BAD_PER_SESSION: usize = 256;

/// What is wrong at one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The row's content differs from what was chained.
    Modified,
    /// A chained or checkpointed event is gone (deleted or truncated).
    Missing,
    /// A row that was never chained (forged).
    Inserted,
    /// A chained row now sits at another seq.
    Reordered,
    /// A checkpoint's HMAC does not verify, or a head it names differs.
    CheckpointMismatch,
    /// Checkpoints are missing or do not chain to each other.
    CheckpointChainBroken,
}

/// One finding, with the exact place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Finding {
    pub kind: FindingKind,
    pub session_id: Option<String>,
    pub seq: Option<i64>,
    pub checkpoint: Option<i64>,
    pub detail: String,
}

/// The outcome of a verify run.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct VerifyReport {
    /// True when nothing was found.
    pub intact: bool,
    pub events_checked: u64,
    pub sessions_checked: u64,
    pub checkpoints_checked: u64,
    /// How many findings there were (only the first 1000 are listed).
    pub finding_count: u64,
    pub findings: Vec<Finding>,
}

/// What the checkpoints and heads say about one session.
#[derive(Default)]
struct Anchors {
    /// Newest checkpointed head: `(seq, hash, checkpoint number)`.
    checkpoint: Option<(i64, String, i64)>,
    /// The `audit_heads` row (not signed; a hint for tails not yet checkpointed).
    head: Option<(i64, String)>,
    /// Every seq at or below this was purged.
    purged_through: Option<i64>,
    seen: bool,
}

impl Anchors {
    fn purged(&self, seq: i64) -> bool {
        self.purged_through.is_some_and(|t| seq <= t)
    }
}

struct Findings {
    list: Vec<Finding>,
    count: u64,
}

impl Findings {
    fn push(
        &mut self,
        kind: FindingKind,
        session: Option<&str>,
        seq: Option<i64>,
        checkpoint: Option<i64>,
        detail: String,
    ) {
        self.count += 1;
        if self.list.len() < MAX_FINDINGS {
            self.list.push(Finding {
                kind,
                session_id: session.map(str::to_owned),
                seq,
                checkpoint,
                detail,
            });
        }
    }
}

/// A link that did not resolve to the row just before it in seq order.
struct Link {
    from_seq: i64,
    to_seq: i64,
    hash: Option<String>,
}

/// State for the session being walked.
struct Walk {
    session: String,
    /// The previous row in seq order: `(seq, stored chain_hash)`.
    prev: Option<(i64, Option<String>)>,
    /// Rows whose own HMAC fails, with "something points at it".
    bad: Vec<(audit_event::Model, bool)>,
    /// Links to resolve at the end of the session.
    links: Vec<Link>,
    /// Stored hashes of the seqs the anchors name.
    anchor_hashes: HashMap<i64, Option<String>>,
    /// Seqs the anchors name.
    anchor_seqs: Vec<i64>,
}

impl Store {
    /// Verifies the whole audit log. See the module docs for what is checked.
    pub async fn verify_audit(&self) -> Result<VerifyReport, StoreError> {
        let key = self.audit_key();
        let mut findings = Findings {
            list: Vec::new(),
            count: 0,
        };
        let mut anchors: BTreeMap<String, Anchors> = BTreeMap::new();
        let (checkpoints, last_number) = self.walk_checkpoints(&mut anchors, &mut findings).await?;
        for h in audit_head::Entity::find().all(self.db()).await? {
            if let (Some(seq), Some(hash)) = (h.last_seq, h.last_hash) {
                anchors.entry(h.session_id).or_default().head = Some((seq, hash));
            }
        }

        let mut events = 0u64;
        let mut sessions = 0u64;
        let mut cursor: Option<(String, i64)> = None;
        let mut walk: Option<Walk> = None;
        loop {
            use audit_event::Column as C;
            let mut q = audit_event::Entity::find();
            if let Some((s, seq)) = &cursor {
                q = q.filter(
                    Condition::any().add(C::SessionId.gt(s.as_str())).add(
                        Condition::all()
                            .add(C::SessionId.eq(s.as_str()))
                            .add(C::Seq.gt(*seq)),
                    ),
                );
            }
            let page = q
                .order_by_asc(C::SessionId)
                .order_by_asc(C::Seq)
                .limit(PAGE)
                .all(self.db())
                .await?;
            let Some(last) = page.last() else { break };
            cursor = Some((last.session_id.clone(), last.seq));
            for row in page {
                events += 1;
                if walk.as_ref().is_none_or(|w| w.session != row.session_id) {
                    if let Some(done) = walk.take() {
                        self.finish(done, &mut anchors, &mut findings).await?;
                    }
                    sessions += 1;
                    let a = anchors.entry(row.session_id.clone()).or_default();
                    a.seen = true;
                    let mut anchor_seqs = Vec::new();
                    if let Some((s, _, _)) = &a.checkpoint {
                        anchor_seqs.push(*s);
                    }
                    if let Some((s, _)) = &a.head {
                        anchor_seqs.push(*s);
                    }
                    walk = Some(Walk {
                        session: row.session_id.clone(),
                        prev: None,
                        bad: Vec::new(),
                        links: Vec::new(),
                        anchor_hashes: HashMap::new(),
                        anchor_seqs,
                    });
                }
                if let Some(w) = walk.as_mut() {
                    step(w, row, key);
                }
            }
        }
        if let Some(done) = walk.take() {
            self.finish(done, &mut anchors, &mut findings).await?;
        }

        // Sessions that checkpoints or heads name, with no row left at all.
        for (session, a) in &anchors {
            if a.seen {
                continue;
            }
            if let Some((seq, _, number)) = &a.checkpoint
                && !a.purged(*seq)
            {
                findings.push(
                    FindingKind::Missing,
                    Some(session),
                    Some(*seq),
                    Some(*number),
                    format!(
                        "the whole session is gone; checkpoint {number} committed to seq {seq}"
                    ),
                );
            } else if let Some((seq, _)) = &a.head
                && !a.purged(*seq)
            {
                findings.push(
                    FindingKind::Missing,
                    Some(session),
                    Some(*seq),
                    None,
                    format!("the whole session is gone; its head names seq {seq}"),
                );
            }
        }

        // A purge that committed while we walked explains rows that vanished.
        if findings.list.iter().any(|f| f.kind == FindingKind::Missing) {
            let late = audit_checkpoint::Entity::find()
                .filter(audit_checkpoint::Column::Number.gt(last_number))
                .filter(audit_checkpoint::Column::Kind.eq("purge"))
                .all(self.db())
                .await?;
            let mut through: HashMap<String, i64> = HashMap::new();
            for cp in late {
                for e in
                    serde_json::from_str::<Vec<CheckpointEntry>>(&cp.entries).unwrap_or_default()
                {
                    let t = through.entry(e.session_id).or_insert(e.seq);
                    *t = (*t).max(e.seq);
                }
            }
            let before = findings.list.len();
            findings.list.retain(|f| {
                !(f.kind == FindingKind::Missing
                    && f.session_id
                        .as_ref()
                        .and_then(|s| through.get(s))
                        .zip(f.seq)
                        .is_some_and(|(t, seq)| seq <= *t))
            });
            findings.count -= (before - findings.list.len()) as u64;
        }

        Ok(VerifyReport {
            intact: findings.count == 0,
            events_checked: events,
            sessions_checked: sessions,
            checkpoints_checked: checkpoints,
            finding_count: findings.count,
            findings: findings.list,
        })
    }

    /// Checks the checkpoint chain and collects what it commits to. Returns
    /// how many checkpoints were read and the last number.
    async fn walk_checkpoints(
        &self,
        anchors: &mut BTreeMap<String, Anchors>,
        findings: &mut Findings,
    ) -> Result<(u64, i64), StoreError> {
        let key = self.audit_key();
        let mut expected = 1i64;
        let mut prev_hash = String::new();
        let mut count = 0u64;
        loop {
            let page = audit_checkpoint::Entity::find()
                .filter(audit_checkpoint::Column::Number.gte(expected))
                .order_by_asc(audit_checkpoint::Column::Number)
                .limit(PAGE)
                .all(self.db())
                .await?;
            if page.is_empty() {
                return Ok((count, expected - 1));
            }
            for cp in page {
                count += 1;
                if cp.number != expected {
                    findings.push(
                        FindingKind::CheckpointChainBroken,
                        None,
                        None,
                        Some(expected),
                        format!("checkpoints {expected} to {} are missing", cp.number - 1),
                    );
                } else if cp.prev_hash != prev_hash {
                    findings.push(
                        FindingKind::CheckpointChainBroken,
                        None,
                        None,
                        Some(cp.number),
                        format!(
                            "checkpoint {} does not chain to checkpoint {}",
                            cp.number,
                            cp.number - 1
                        ),
                    );
                }
                expected = cp.number + 1;
                prev_hash = cp.hash.clone();
                let want = checkpoint_hash(
                    key,
                    cp.number,
                    &cp.kind,
                    cp.created_at,
                    &cp.prev_hash,
                    &cp.entries,
                );
                let entries = serde_json::from_str::<Vec<CheckpointEntry>>(&cp.entries);
                let entries = match entries {
                    Ok(e) if want == cp.hash => e,
                    _ => {
                        findings.push(
                            FindingKind::CheckpointMismatch,
                            None,
                            None,
                            Some(cp.number),
                            format!(
                                "checkpoint {} was altered (its HMAC does not verify)",
                                cp.number
                            ),
                        );
                        continue;
                    }
                };
                for e in entries {
                    let a = anchors.entry(e.session_id).or_default();
                    match (cp.kind.as_str(), e.hash) {
                        ("purge", _) => {
                            a.purged_through =
                                Some(a.purged_through.map_or(e.seq, |t| t.max(e.seq)));
                        }
                        (_, Some(hash)) => a.checkpoint = Some((e.seq, hash, cp.number)),
                        (_, None) => {}
                    }
                }
            }
        }
    }

    /// Classifies one session's failing rows and resolves its links.
    async fn finish(
        &self,
        mut w: Walk,
        anchors: &mut BTreeMap<String, Anchors>,
        findings: &mut Findings,
    ) -> Result<(), StoreError> {
        let key = self.audit_key();
        let empty = Anchors::default();
        let a = anchors.get(&w.session).unwrap_or(&empty);
        let session = w.session.as_str();

        // Reordered: a failing row that verifies at another failing row's seq.
        let seqs: Vec<i64> = w.bad.iter().map(|(m, _)| m.seq).collect();
        let mut restored: HashMap<i64, Option<String>> = HashMap::new();
        let mut reordered = vec![false; w.bad.len()];
        for (i, (m, _)) in w.bad.iter().enumerate() {
            let Some(hash) = &m.chain_hash else { continue };
            if let Some(orig) = seqs
                .iter()
                .copied()
                .find(|s| *s != m.seq && event_hash(key, m, *s) == *hash)
            {
                reordered[i] = true;
                restored.insert(orig, m.chain_hash.clone());
                findings.push(
                    FindingKind::Reordered,
                    Some(session),
                    Some(m.seq),
                    None,
                    format!("the event chained as seq {orig} is stored at seq {}", m.seq),
                );
            }
        }
        let bad_seqs: HashMap<i64, usize> = w
            .bad
            .iter()
            .enumerate()
            .map(|(i, (m, _))| (m.seq, i))
            .collect();

        // Links that did not resolve in passing.
        for link in std::mem::take(&mut w.links) {
            let target = match restored.get(&link.to_seq) {
                Some(h) => Some(h.clone()),
                None => self.stored_hash(session, link.to_seq).await?,
            };
            if let Some(&i) = bad_seqs.get(&link.to_seq)
                && let Some((_, pointed)) = w.bad.get_mut(i)
            {
                *pointed = true;
            }
            match target {
                Some(h) if h == link.hash => {}
                None if a.purged(link.to_seq) => {}
                None => findings.push(
                    FindingKind::Missing,
                    Some(session),
                    Some(link.to_seq),
                    None,
                    format!("seq {} is chained to it, and it is gone", link.from_seq),
                ),
                Some(_) if bad_seqs.contains_key(&link.to_seq) => {}
                Some(_) => findings.push(
                    FindingKind::Missing,
                    Some(session),
                    Some(link.to_seq),
                    None,
                    format!(
                        "seq {} is chained to another event than the one stored at seq {}",
                        link.from_seq, link.to_seq
                    ),
                ),
            }
        }

        // The newest checkpointed head, and the session head, must be there.
        if let Some((seq, hash, number)) = &a.checkpoint
            && !a.purged(*seq)
        {
            let stored = match restored.get(seq) {
                Some(h) => Some(h.clone()),
                None => w.anchor_hashes.get(seq).cloned(),
            };
            if let Some(&i) = bad_seqs.get(seq)
                && let Some((_, pointed)) = w.bad.get_mut(i)
            {
                *pointed = true;
            }
            match stored {
                None => findings.push(
                    FindingKind::Missing,
                    Some(session),
                    Some(*seq),
                    Some(*number),
                    format!("checkpoint {number} committed to this event, and it is gone"),
                ),
                Some(h) if h.as_ref() == Some(hash) => {}
                Some(_) if bad_seqs.contains_key(seq) => {}
                Some(_) => findings.push(
                    FindingKind::CheckpointMismatch,
                    Some(session),
                    Some(*seq),
                    Some(*number),
                    format!("checkpoint {number} committed to another event at this seq"),
                ),
            }
        }
        let checkpointed = a.checkpoint.as_ref().map(|(s, _, _)| *s);
        if let Some((seq, _)) = &a.head
            && !a.purged(*seq)
            && checkpointed != Some(*seq)
        {
            if let Some(&i) = bad_seqs.get(seq)
                && let Some((_, pointed)) = w.bad.get_mut(i)
            {
                *pointed = true;
            }
            if !w.anchor_hashes.contains_key(seq) && !restored.contains_key(seq) {
                findings.push(
                    FindingKind::Missing,
                    Some(session),
                    Some(*seq),
                    None,
                    "the session's newest event is gone".to_owned(),
                );
            }
        }

        for (i, (m, pointed)) in w.bad.iter().enumerate() {
            if reordered.get(i).copied().unwrap_or(false) {
                continue;
            }
            let (kind, detail) = if *pointed {
                (
                    FindingKind::Modified,
                    "the row differs from what was chained",
                )
            } else {
                (FindingKind::Inserted, "the row was never chained (forged)")
            };
            findings.push(kind, Some(session), Some(m.seq), None, detail.to_owned());
        }
        Ok(())
    }

    async fn stored_hash(
        &self,
        session: &str,
        seq: i64,
    ) -> Result<Option<Option<String>>, StoreError> {
        Ok(audit_event::Entity::find_by_id((session.to_owned(), seq))
            .one(self.db())
            .await?
            .map(|m| m.chain_hash))
    }
}

/// Checks one row in passing: its own HMAC, and its link when it points at
/// the row just before it.
fn step(w: &mut Walk, row: audit_event::Model, key: &super::chain::AuditKey) {
    if w.anchor_seqs.contains(&row.seq) {
        w.anchor_hashes.insert(row.seq, row.chain_hash.clone());
    }
    let valid = row
        .chain_hash
        .as_ref()
        .is_some_and(|h| *h == event_hash(key, &row, row.seq));
    let prev = w.prev.replace((row.seq, row.chain_hash.clone()));
    if !valid {
        if w.bad.len() < MAX_BAD_PER_SESSION {
            w.bad.push((row, false));
        }
        return;
    }
    // Something valid points at the previous row: if that row failed, it
    // was modified rather than forged.
    let Some(to_seq) = row.prev_seq else { return };
    match prev {
        Some((seq, hash)) if seq == to_seq => {
            if let Some((m, pointed)) = w.bad.last_mut()
                && m.seq == seq
            {
                *pointed = true;
            }
            if hash != row.prev_hash {
                w.links.push(Link {
                    from_seq: row.seq,
                    to_seq,
                    hash: row.prev_hash,
                });
            }
        }
        _ => w.links.push(Link {
            from_seq: row.seq,
            to_seq,
            hash: row.prev_hash,
        }),
    }
}
