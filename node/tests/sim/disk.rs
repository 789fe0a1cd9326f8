//! A simulated partition log with the crash model of the engine's `storage/sim.rs`:
//! synced entries survive a crash; of the entries written since the last sync, a
//! random prefix survives and the rest (the first of them possibly torn, which the
//! engine's recovery cuts) is lost. The hard state, truncations, installed snapshots
//! and the commit checkpoint are written durably at once (the barriers of the
//! ordering contract).

use strand_node::replication::{EntryId, HardState, Index, LogTerms, Term};

pub type Payload = u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored {
    pub term: Term,
    pub payload: Payload,
    /// Order of the write, so a sync covers exactly what was written before it began.
    write_seq: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    /// The durable commit checkpoint (`CommitAdvanced` is published only once it is).
    pub commit_checkpoint: Index,
    base: EntryId,
    entries: Vec<Stored>,
    durable_len: usize,
    write_seq: u64,
    /// The sync in progress covers every write up to this sequence number, and
    /// the log ended at this entry when it began.
    sync_covers: Option<(u64, EntryId)>,
}

impl Disk {
    pub fn base(&self) -> EntryId {
        self.base
    }

    pub fn last_index(&self) -> Index {
        self.base.index + self.entries.len() as u64
    }

    pub fn durable_index(&self) -> Index {
        self.base.index + self.durable_len as u64
    }

    pub fn get(&self, index: Index) -> Option<Stored> {
        let pos = index.checked_sub(self.base.index + 1)?;
        self.entries.get(pos as usize).copied()
    }

    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        self.get(index).map(|s| s.term)
    }

    /// `(index, term, payload)` of every entry held.
    pub fn entries(&self) -> impl Iterator<Item = (Index, Term, Payload)> + '_ {
        let first = self.base.index + 1;
        self.entries
            .iter()
            .enumerate()
            .map(move |(i, s)| (first + i as u64, s.term, s.payload))
    }

    pub fn log_terms(&self) -> LogTerms {
        let ids = self
            .entries()
            .map(|(index, term, _)| EntryId { index, term });
        LogTerms::from_entries(self.base, ids).expect("the simulated disk holds a valid log")
    }

    pub fn append(&mut self, index: Index, term: Term, payload: Payload) -> Result<(), String> {
        if index != self.last_index() + 1 {
            return Err(format!(
                "append of index {index} after last index {}",
                self.last_index()
            ));
        }
        self.write_seq += 1;
        self.entries.push(Stored {
            term,
            payload,
            write_seq: self.write_seq,
        });
        Ok(())
    }

    pub fn truncate(&mut self, from_index: Index) {
        let keep = from_index.saturating_sub(self.base.index + 1) as usize;
        self.entries.truncate(keep);
        self.durable_len = self.durable_len.min(self.entries.len());
    }

    /// Replace the log with `base` followed by `entries`, all durable.
    pub fn install(&mut self, base: EntryId, entries: &[(Term, Payload)]) {
        self.base = base;
        self.entries = entries
            .iter()
            .map(|&(term, payload)| {
                self.write_seq += 1;
                Stored {
                    term,
                    payload,
                    write_seq: self.write_seq,
                }
            })
            .collect();
        self.durable_len = self.entries.len();
    }

    /// Retention: drop the entries through `new_base_index`.
    pub fn remove_prefix(&mut self, new_base_index: Index) {
        let Some(term) = self.term_at(new_base_index) else {
            return;
        };
        let drop = (new_base_index - self.base.index) as usize;
        self.entries.drain(..drop);
        self.durable_len = self.durable_len.saturating_sub(drop);
        self.base = EntryId {
            index: new_base_index,
            term,
        };
    }

    /// Start a sync if none runs and something is unsynced; true if one started.
    pub fn start_sync(&mut self) -> bool {
        if self.sync_covers.is_some() || self.durable_len == self.entries.len() {
            return false;
        }
        let last = self.last_index();
        let end = EntryId {
            index: last,
            term: self.term_at(last).unwrap_or(0),
        };
        self.sync_covers = Some((self.write_seq, end));
        true
    }

    /// The sync in progress completed: returns the durable end, and the end of
    /// the log when the sync began (what a naive I/O layer would report, stale if
    /// the log was truncated meanwhile).
    pub fn complete_sync(&mut self) -> Option<(EntryId, EntryId)> {
        let (covers, began_at) = self.sync_covers.take()?;
        let synced = self
            .entries
            .iter()
            .take_while(|s| s.write_seq <= covers)
            .count();
        self.durable_len = self.durable_len.max(synced);
        let index = self.durable_index();
        let durable = EntryId {
            index,
            term: self.term_at(index).unwrap_or(0),
        };
        Some((durable, began_at))
    }

    /// Power loss: keep what was synced and a random prefix of the rest.
    pub fn crash(&mut self, rng: &mut fastrand::Rng) {
        let unsynced = self.entries.len() - self.durable_len;
        let survived = rng.usize(0..=unsynced);
        self.entries.truncate(self.durable_len + survived);
        self.durable_len = self.entries.len();
        self.sync_covers = None;
    }
}
