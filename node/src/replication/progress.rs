//! What a leader knows about each follower, and what it sends next.

use super::message::{AppendRequest, ConflictHint, InstallSnapshot, Message};
use super::raft::{Action, Config};
use super::{EntryId, Index, LogTerms, NodeId, Term};

/// The leader's view of one follower (Raft's `nextIndex`/`matchIndex`, with the
/// send states of etcd's `Progress`).
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) node: NodeId,
    /// Highest index known to be durable on the follower and to match the leader's
    /// log: the only thing the commit rule counts.
    pub(crate) match_index: Index,
    /// The next index to send. Always `> match_index`.
    pub(crate) next_index: Index,
    pub(crate) state: SendState,
    /// Heard from in the current CheckQuorum period.
    pub(crate) recent_active: bool,
    /// When this leader last heard from it (`now_ms`), if ever.
    pub(crate) heard_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendState {
    /// Where the follower's log matches ours is unknown: one append at a time,
    /// resent when a heartbeat response shows the follower alive.
    Probe { in_flight: bool },
    /// The follower accepted an append: stream entries without waiting, up to
    /// `inflight_entries_max` past its durable index.
    Replicate,
    /// A snapshot up to `last_index` is on its way; nothing else is sent until it
    /// is acknowledged or `deadline_ms` passes.
    Snapshot { last_index: Index, deadline_ms: u64 },
}

/// Whether an answer from the follower moved its progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Update {
    Applied,
    Stale,
}

impl Progress {
    pub(crate) fn new(node: NodeId, next_index: Index, recent_active: bool) -> Self {
        Progress {
            node,
            match_index: 0,
            next_index,
            state: SendState::Probe { in_flight: false },
            recent_active,
            heard_ms: None,
        }
    }

    /// The follower holds `..=matching_index` like we do, durably through
    /// `durable_index`.
    pub(crate) fn on_accepted(&mut self, matching_index: Index, durable_index: Index) {
        self.match_index = self.match_index.max(durable_index);
        let caught_up = match self.state {
            SendState::Snapshot { last_index, .. } => matching_index >= last_index,
            SendState::Probe { .. } | SendState::Replicate => true,
        };
        if caught_up {
            self.state = SendState::Replicate;
            self.next_index = self.next_index.max(matching_index + 1);
        }
        self.next_index = self.next_index.max(self.match_index + 1);
    }

    /// The follower does not hold our entry at `prev_index`. Only the answer to the
    /// latest probe (or, when streaming, one past what is durable there) moves
    /// `next_index`; older rejections were overtaken by later sends.
    pub(crate) fn on_rejected(
        &mut self,
        prev_index: Index,
        hint: ConflictHint,
        log: &LogTerms,
    ) -> Update {
        let current = match self.state {
            SendState::Replicate => prev_index > self.match_index,
            SendState::Probe { .. } => prev_index + 1 == self.next_index,
            SendState::Snapshot { .. } => false,
        };
        // The follower's log ends below what it acknowledged as durable: it lost its
        // disk (a replaced node, which Raft's model does not have). Start over from
        // where its log ends, or it would be left out forever. A rejection from
        // before it caught up, arriving late, looks the same; resending what it
        // holds then costs bandwidth only (commit indexes never go back).
        if hint.term.is_none()
            && hint.index >= 1
            && hint.index <= self.match_index
            && hint.index <= prev_index
        {
            self.match_index = hint.index.saturating_sub(1);
            self.next_index = hint.index;
            self.state = SendState::Probe { in_flight: false };
            return Update::Applied;
        }
        if !current || prev_index <= self.match_index {
            return Update::Stale;
        }
        // If we hold the follower's conflicting term, our entries of that term up
        // to our last one of it match; else skip the follower's whole term.
        let guess = hint
            .term
            .and_then(|term| log.last_index_of_term(term))
            .map_or(hint.index, |last| last + 1);
        // Strictly below the rejected send, never at or below what is durable there.
        self.next_index = guess.clamp(self.match_index + 1, prev_index);
        self.state = SendState::Probe { in_flight: false };
        Update::Applied
    }

    /// Queue what this follower should get next, if anything: entries, an empty
    /// append (a probe, or `allow_empty` to learn where a streaming follower is),
    /// or a snapshot when it needs entries retention removed.
    pub(crate) fn send(
        &mut self,
        sender: &Sender<'_>,
        now_ms: u64,
        allow_empty: bool,
        out: &mut Vec<Action>,
    ) {
        let probing = match self.state {
            SendState::Snapshot { .. } | SendState::Probe { in_flight: true } => return,
            SendState::Probe { in_flight: false } => true,
            SendState::Replicate => false,
        };
        let log = sender.log;
        let prev_index = self.next_index - 1;
        let Some(prev_term) = log.term_at(prev_index) else {
            // `next_index <= last + 1` always, so the entry before it is gone only
            // because retention removed it.
            debug_assert!(prev_index < log.base().index, "next index past the log");
            self.send_snapshot(sender, now_ms, out);
            return;
        };
        let mut last = log
            .last_index()
            .min(prev_index.saturating_add(sender.config.append_entries_max as u64));
        if !probing {
            let window_end = self
                .match_index
                .saturating_add(sender.config.inflight_entries_max);
            last = last.min(window_end);
        }
        let last = last.max(prev_index);
        if last == prev_index && !probing && !allow_empty {
            return;
        }
        let entries = (prev_index + 1..=last)
            .map(|index| EntryId {
                index,
                // Every index in `prev_index..=last_index` has a term.
                term: log.term_at(index).unwrap_or(0),
            })
            .collect();
        out.push(Action::Send {
            to: self.node,
            msg: Message::Append(AppendRequest {
                term: sender.term,
                prev: EntryId {
                    index: prev_index,
                    term: prev_term,
                },
                entries,
                commit_index: sender.commit_index,
            }),
        });
        match &mut self.state {
            SendState::Probe { in_flight } => *in_flight = true,
            SendState::Replicate => self.next_index = last + 1,
            SendState::Snapshot { .. } => {}
        }
    }

    fn send_snapshot(&mut self, sender: &Sender<'_>, now_ms: u64, out: &mut Vec<Action>) {
        let log = sender.log;
        // Retention only removes committed entries, so the commit index is held.
        let last_index = sender.commit_index;
        debug_assert!(last_index >= log.base().index && last_index <= log.last_index());
        out.push(Action::SendSnapshot {
            to: self.node,
            snapshot: InstallSnapshot {
                term: sender.term,
                commit_index: sender.commit_index,
                log: log.prefix_through(last_index),
            },
        });
        self.state = SendState::Snapshot {
            last_index,
            deadline_ms: now_ms.saturating_add(sender.config.snapshot_timeout_ms),
        };
        self.next_index = last_index + 1;
    }

    /// A heartbeat answer shows the follower alive: resume a stalled probe or an
    /// overdue snapshot.
    pub(crate) fn on_alive(&mut self, now_ms: u64) {
        self.recent_active = true;
        self.heard_ms = Some(now_ms);
        match self.state {
            SendState::Probe { .. } => self.state = SendState::Probe { in_flight: false },
            SendState::Snapshot { deadline_ms, .. } if now_ms >= deadline_ms => {
                self.state = SendState::Probe { in_flight: false };
                self.next_index = self.match_index + 1;
            }
            SendState::Snapshot { .. } | SendState::Replicate => {}
        }
    }
}

/// What every send of one leader shares.
#[derive(Debug)]
pub(crate) struct Sender<'a> {
    pub(crate) config: &'a Config,
    pub(crate) log: &'a LogTerms,
    pub(crate) term: Term,
    pub(crate) commit_index: Index,
}
