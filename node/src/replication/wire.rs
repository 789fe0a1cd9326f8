//! Conversion between the state machine's [`Message`] and the wire types of
//! `strand_net::replication` (the rkyv archives carried in frames).
//!
//! Outgoing: [`to_frame`] and [`to_heartbeat_batch`] build the owned wire values that
//! `strand_net::replication::encode` turns into bytes. Incoming: [`from_archived`] and
//! [`from_archived_batch`] read the zero-copy archives `decode` hands out and rebuild
//! node types. A validated archive only proves the bytes are a well-typed value, not a
//! sensible one (term 0, entries out of order, a snapshot range that is not a log), so
//! everything rebuilt goes through [`Message::is_well_formed`] (and a snapshot's log
//! through [`LogTerms::new`]) and nonsense becomes a [`WireError`], never a panic.

use bytes::Bytes;
use strand_net::replication as net;
use strand_net::replication::{
    ArchivedAppendOutcome, ArchivedEntryId, ArchivedHeartbeatBatch, ArchivedMessage,
    ArchivedReplicationFrame, ArchivedVoteRequest, ArchivedVoteResponse, GroupId,
};

use super::{
    AppendOutcome, AppendRequest, AppendResponse, ConflictHint, EntryId, Heartbeat,
    HeartbeatResponse, InstallSnapshot, InvalidLogTerms, LogTerms, Message, NodeId, TimeoutNow,
    VoteRequest, VoteResponse,
};

/// Why a decoded (and rkyv-validated) archive was refused as a replication message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message's fields are out of range or inconsistent
    /// ([`Message::is_well_formed`] said no).
    #[error("malformed {kind} message for group {group} from node {from}")]
    Malformed {
        group: GroupId,
        from: NodeId,
        kind: &'static str,
    },
    /// An install-snapshot whose range is not a log ([`LogTerms::new`] said no).
    #[error("install-snapshot for group {group} from node {from} has an invalid log: {source}")]
    InvalidSnapshotLog {
        group: GroupId,
        from: NodeId,
        #[source]
        source: InvalidLogTerms,
    },
    /// An append whose payloads are neither absent nor one per entry, or payloads
    /// attached to a message that is not an append.
    #[error(
        "append for group {group} from node {from} carries {payloads} payloads for {entries} entries (must be 0 or equal)"
    )]
    PayloadCountMismatch {
        group: GroupId,
        from: NodeId,
        entries: usize,
        payloads: usize,
    },
    /// One heartbeat (or answer) of a batch is malformed; the whole batch is refused
    /// (its sender is broken or hostile).
    #[error("malformed {kind} for group {group} in the heartbeat batch from node {from}")]
    MalformedHeartbeat {
        group: GroupId,
        from: NodeId,
        kind: &'static str,
    },
}

/// A replication frame read back into node types. The payloads borrow the archive
/// (zero-copy): empty, or one record batch per entry of an [`Message::Append`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingMessage<'a> {
    pub group: GroupId,
    pub from: NodeId,
    pub to: NodeId,
    pub message: Message,
    pub payloads: Vec<&'a [u8]>,
}

/// A heartbeat batch read back into node types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingHeartbeats {
    pub from: NodeId,
    pub to: NodeId,
    pub heartbeats: Vec<(GroupId, Heartbeat)>,
    pub responses: Vec<(GroupId, HeartbeatResponse)>,
}

/// A short name of the message's kind, for errors and logs.
pub fn kind_name(msg: &Message) -> &'static str {
    match msg {
        Message::PreVote(_) => "pre-vote",
        Message::PreVoteResponse(_) => "pre-vote response",
        Message::Vote(_) => "vote",
        Message::VoteResponse(_) => "vote response",
        Message::Append(_) => "append",
        Message::AppendResponse(_) => "append response",
        Message::Heartbeat(_) => "heartbeat",
        Message::HeartbeatResponse(_) => "heartbeat response",
        Message::InstallSnapshot(_) => "install-snapshot",
        Message::TimeoutNow(_) => "timeout-now",
    }
}

fn entry_to_wire(e: EntryId) -> net::EntryId {
    net::EntryId {
        index: e.index,
        term: e.term,
    }
}

fn vote_request_to_wire(m: &VoteRequest) -> net::VoteRequest {
    net::VoteRequest {
        term: m.term,
        last: entry_to_wire(m.last),
        transfer: m.transfer,
    }
}

fn vote_response_to_wire(m: &VoteResponse) -> net::VoteResponse {
    net::VoteResponse {
        term: m.term,
        granted: m.granted,
    }
}

fn heartbeat_to_wire(m: &Heartbeat) -> net::Heartbeat {
    net::Heartbeat {
        term: m.term,
        commit_index: m.commit_index,
    }
}

fn heartbeat_response_to_wire(m: &HeartbeatResponse) -> net::HeartbeatResponse {
    net::HeartbeatResponse { term: m.term }
}

/// The wire frame of `msg`, sent by `from` to `to` in `group`.
///
/// `payloads` are the record batches of an [`Message::Append`], one per entry in
/// order, or empty to send ids only; any other message carries none, and payloads
/// given with one are a caller bug (debug builds assert; release builds drop them).
/// A count that does not match the entries is refused by `encode`.
pub fn to_frame(
    group: GroupId,
    from: NodeId,
    to: NodeId,
    msg: &Message,
    payloads: Vec<Bytes>,
) -> net::ReplicationFrame {
    debug_assert!(
        payloads.is_empty() || matches!(msg, Message::Append(_)),
        "payloads attached to a {} message",
        kind_name(msg)
    );
    let message = match msg {
        Message::PreVote(m) => net::Message::PreVote(vote_request_to_wire(m)),
        Message::PreVoteResponse(m) => net::Message::PreVoteResponse(vote_response_to_wire(m)),
        Message::Vote(m) => net::Message::Vote(vote_request_to_wire(m)),
        Message::VoteResponse(m) => net::Message::VoteResponse(vote_response_to_wire(m)),
        Message::Append(m) => net::Message::Append(net::AppendRequest {
            term: m.term,
            prev: entry_to_wire(m.prev),
            entries: m.entries.iter().copied().map(entry_to_wire).collect(),
            commit_index: m.commit_index,
            payloads,
        }),
        Message::AppendResponse(m) => net::Message::AppendResponse(net::AppendResponse {
            term: m.term,
            outcome: match m.outcome {
                AppendOutcome::Accepted {
                    matching_index,
                    durable_index,
                } => net::AppendOutcome::Accepted {
                    matching_index,
                    durable_index,
                },
                AppendOutcome::Rejected { prev_index, hint } => net::AppendOutcome::Rejected {
                    prev_index,
                    hint: net::ConflictHint {
                        term: hint.term,
                        index: hint.index,
                    },
                },
            },
        }),
        Message::Heartbeat(m) => net::Message::Heartbeat(heartbeat_to_wire(m)),
        Message::HeartbeatResponse(m) => {
            net::Message::HeartbeatResponse(heartbeat_response_to_wire(m))
        }
        Message::InstallSnapshot(m) => net::Message::InstallSnapshot(net::InstallSnapshot {
            term: m.term,
            commit_index: m.commit_index,
            base: entry_to_wire(m.log.base()),
            term_starts: m
                .log
                .term_starts()
                .iter()
                .copied()
                .map(entry_to_wire)
                .collect(),
            last_index: m.log.last_index(),
        }),
        Message::TimeoutNow(m) => net::Message::TimeoutNow(net::TimeoutNow { term: m.term }),
    };
    net::ReplicationFrame {
        group,
        from,
        to,
        message,
    }
}

/// The coalesced heartbeats (and answers) from `from` to `to`, one per group.
pub fn to_heartbeat_batch(
    from: NodeId,
    to: NodeId,
    heartbeats: &[(GroupId, Heartbeat)],
    responses: &[(GroupId, HeartbeatResponse)],
) -> net::HeartbeatBatch {
    net::HeartbeatBatch {
        from,
        to,
        heartbeats: heartbeats
            .iter()
            .map(|(group, m)| net::GroupHeartbeat {
                group: *group,
                heartbeat: heartbeat_to_wire(m),
            })
            .collect(),
        responses: responses
            .iter()
            .map(|(group, m)| net::GroupHeartbeatResponse {
                group: *group,
                response: heartbeat_response_to_wire(m),
            })
            .collect(),
    }
}

fn entry_from_archived(e: &ArchivedEntryId) -> EntryId {
    EntryId {
        index: e.index.to_native(),
        term: e.term.to_native(),
    }
}

fn vote_request_from_archived(m: &ArchivedVoteRequest) -> VoteRequest {
    VoteRequest {
        term: m.term.to_native(),
        last: entry_from_archived(&m.last),
        transfer: m.transfer,
    }
}

fn vote_response_from_archived(m: &ArchivedVoteResponse) -> VoteResponse {
    VoteResponse {
        term: m.term.to_native(),
        granted: m.granted,
    }
}

/// Rebuilds the node message of a decoded frame, with its payloads borrowed from the
/// archive, and refuses anything the state machine must not see.
pub fn from_archived(frame: &ArchivedReplicationFrame) -> Result<IncomingMessage<'_>, WireError> {
    let group = frame.group.to_native();
    let from = frame.from.to_native();
    let to = frame.to.to_native();
    let mut payloads = Vec::new();
    let message = match &frame.message {
        ArchivedMessage::PreVote(m) => Message::PreVote(vote_request_from_archived(m)),
        ArchivedMessage::PreVoteResponse(m) => {
            Message::PreVoteResponse(vote_response_from_archived(m))
        }
        ArchivedMessage::Vote(m) => Message::Vote(vote_request_from_archived(m)),
        ArchivedMessage::VoteResponse(m) => Message::VoteResponse(vote_response_from_archived(m)),
        ArchivedMessage::Append(m) => {
            // `decode` already checks this; an archive reached some other way must
            // not get past it either.
            let (entries, count) = (m.entries.len(), m.payloads.len());
            if count != 0 && count != entries {
                return Err(WireError::PayloadCountMismatch {
                    group,
                    from,
                    entries,
                    payloads: count,
                });
            }
            payloads = m.payloads.iter().map(|p| p.as_slice()).collect();
            Message::Append(AppendRequest {
                term: m.term.to_native(),
                prev: entry_from_archived(&m.prev),
                entries: m.entries.iter().map(entry_from_archived).collect(),
                commit_index: m.commit_index.to_native(),
            })
        }
        ArchivedMessage::AppendResponse(m) => Message::AppendResponse(AppendResponse {
            term: m.term.to_native(),
            outcome: match &m.outcome {
                ArchivedAppendOutcome::Accepted {
                    matching_index,
                    durable_index,
                } => AppendOutcome::Accepted {
                    matching_index: matching_index.to_native(),
                    durable_index: durable_index.to_native(),
                },
                ArchivedAppendOutcome::Rejected { prev_index, hint } => AppendOutcome::Rejected {
                    prev_index: prev_index.to_native(),
                    hint: ConflictHint {
                        term: hint.term.as_ref().map(|t| t.to_native()),
                        index: hint.index.to_native(),
                    },
                },
            },
        }),
        ArchivedMessage::Heartbeat(m) => Message::Heartbeat(Heartbeat {
            term: m.term.to_native(),
            commit_index: m.commit_index.to_native(),
        }),
        ArchivedMessage::HeartbeatResponse(m) => Message::HeartbeatResponse(HeartbeatResponse {
            term: m.term.to_native(),
        }),
        ArchivedMessage::InstallSnapshot(m) => {
            let log = LogTerms::new(
                entry_from_archived(&m.base),
                m.term_starts.iter().map(entry_from_archived).collect(),
                m.last_index.to_native(),
            )
            .map_err(|source| WireError::InvalidSnapshotLog {
                group,
                from,
                source,
            })?;
            Message::InstallSnapshot(InstallSnapshot {
                term: m.term.to_native(),
                commit_index: m.commit_index.to_native(),
                log,
            })
        }
        ArchivedMessage::TimeoutNow(m) => Message::TimeoutNow(TimeoutNow {
            term: m.term.to_native(),
        }),
    };
    if !message.is_well_formed() {
        return Err(WireError::Malformed {
            group,
            from,
            kind: kind_name(&message),
        });
    }
    Ok(IncomingMessage {
        group,
        from,
        to,
        message,
        payloads,
    })
}

/// Rebuilds the heartbeats and answers of a decoded batch. One malformed entry
/// refuses the whole batch.
pub fn from_archived_batch(
    batch: &ArchivedHeartbeatBatch,
) -> Result<IncomingHeartbeats, WireError> {
    let from = batch.from.to_native();
    let to = batch.to.to_native();
    let malformed = |group, kind| WireError::MalformedHeartbeat { group, from, kind };
    let heartbeats = batch
        .heartbeats
        .iter()
        .map(|h| {
            let group = h.group.to_native();
            let heartbeat = Heartbeat {
                term: h.heartbeat.term.to_native(),
                commit_index: h.heartbeat.commit_index.to_native(),
            };
            if Message::Heartbeat(heartbeat).is_well_formed() {
                Ok((group, heartbeat))
            } else {
                Err(malformed(group, "heartbeat"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let responses = batch
        .responses
        .iter()
        .map(|r| {
            let group = r.group.to_native();
            let response = HeartbeatResponse {
                term: r.response.term.to_native(),
            };
            if Message::HeartbeatResponse(response).is_well_formed() {
                Ok((group, response))
            } else {
                Err(malformed(group, "heartbeat response"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(IncomingHeartbeats {
        from,
        to,
        heartbeats,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use strand_net::replication::{decode, encode, DecodedFrame, FrameBuffer, FRAME_HEADER_BYTES};

    use super::super::{INDEX_MAX, TERM_MAX};
    use super::*;

    fn id(index: u64, term: u64) -> EntryId {
        EntryId { index, term }
    }

    fn samples() -> Vec<(Message, Vec<Bytes>)> {
        let vote = VoteRequest {
            term: 5,
            last: id(40, 4),
            transfer: false,
        };
        let append = AppendRequest {
            term: 7,
            prev: id(10, 6),
            entries: vec![id(11, 6), id(12, 7), id(13, 7)],
            commit_index: 9,
        };
        let log = LogTerms::new(id(3, 1), vec![id(4, 1), id(8, 3)], 12).expect("valid log");
        vec![
            (Message::PreVote(vote), vec![]),
            (
                Message::PreVoteResponse(VoteResponse {
                    term: 5,
                    granted: true,
                }),
                vec![],
            ),
            (
                Message::Vote(VoteRequest {
                    transfer: true,
                    ..vote
                }),
                vec![],
            ),
            (
                Message::VoteResponse(VoteResponse {
                    term: 6,
                    granted: false,
                }),
                vec![],
            ),
            (Message::Append(append.clone()), vec![]),
            (
                Message::Append(append),
                vec![
                    Bytes::from_static(b"batch one"),
                    Bytes::new(),
                    Bytes::from(vec![0xAB; 5000]),
                ],
            ),
            (
                Message::Append(AppendRequest {
                    term: 2,
                    prev: EntryId::ZERO,
                    entries: vec![],
                    commit_index: 0,
                }),
                vec![],
            ),
            (
                Message::AppendResponse(AppendResponse {
                    term: 7,
                    outcome: AppendOutcome::Accepted {
                        matching_index: 13,
                        durable_index: 11,
                    },
                }),
                vec![],
            ),
            (
                Message::AppendResponse(AppendResponse {
                    term: 7,
                    outcome: AppendOutcome::Rejected {
                        prev_index: 10,
                        hint: ConflictHint {
                            term: Some(4),
                            index: 8,
                        },
                    },
                }),
                vec![],
            ),
            (
                Message::AppendResponse(AppendResponse {
                    term: 7,
                    outcome: AppendOutcome::Rejected {
                        prev_index: 10,
                        hint: ConflictHint {
                            term: None,
                            index: 6,
                        },
                    },
                }),
                vec![],
            ),
            (
                Message::Heartbeat(Heartbeat {
                    term: TERM_MAX,
                    commit_index: INDEX_MAX,
                }),
                vec![],
            ),
            (
                Message::HeartbeatResponse(HeartbeatResponse { term: 3 }),
                vec![],
            ),
            (
                Message::InstallSnapshot(InstallSnapshot {
                    term: 4,
                    commit_index: 15,
                    log,
                }),
                vec![],
            ),
            (
                Message::InstallSnapshot(InstallSnapshot {
                    term: 1,
                    commit_index: 0,
                    log: LogTerms::empty(),
                }),
                vec![],
            ),
            (Message::TimeoutNow(TimeoutNow { term: 9 }), vec![]),
        ]
    }

    /// Encodes `frame`, decodes it (zero-copy) and converts it back.
    fn through_wire(frame: &net::ReplicationFrame) -> Result<(Message, Vec<Vec<u8>>), WireError> {
        let bytes = encode(frame).expect("encode");
        let mut scratch = FrameBuffer::new();
        let Ok(DecodedFrame::Replication(archived)) = decode(&bytes, &mut scratch) else {
            panic!("decode failed");
        };
        let incoming = from_archived(archived)?;
        assert_eq!(
            (incoming.group, incoming.from, incoming.to),
            (frame.group, frame.from, frame.to)
        );
        let payloads = incoming.payloads.iter().map(|p| p.to_vec()).collect();
        Ok((incoming.message, payloads))
    }

    #[test]
    fn every_message_kind_round_trips() {
        let mut kinds = std::collections::HashSet::new();
        for (msg, payloads) in samples() {
            assert!(msg.is_well_formed(), "sample {msg:?} is malformed");
            kinds.insert(kind_name(&msg));
            let frame = to_frame(77, 1, 2, &msg, payloads.clone());
            let (back, back_payloads) = through_wire(&frame).expect("round trip");
            assert_eq!(back, msg);
            let want: Vec<Vec<u8>> = payloads.iter().map(|p| p.to_vec()).collect();
            assert_eq!(back_payloads, want);
        }
        assert_eq!(kinds.len(), 10, "every message kind is sampled");
    }

    #[test]
    fn payloads_are_borrowed_from_the_frame() {
        let (msg, payloads) = samples().swap_remove(5);
        let bytes = encode(&to_frame(1, 1, 2, &msg, payloads)).expect("encode");
        let mut scratch = FrameBuffer::new();
        let Ok(DecodedFrame::Replication(archived)) = decode(&bytes, &mut scratch) else {
            panic!("decode failed");
        };
        let incoming = from_archived(archived).expect("valid");
        let range = bytes.as_slice().as_ptr_range();
        assert_eq!(incoming.payloads.len(), 3);
        for payload in incoming.payloads.iter().filter(|p| !p.is_empty()) {
            assert!(range.contains(&payload.as_ptr()));
        }
    }

    #[test]
    fn heartbeat_batch_round_trips() {
        let heartbeats = [
            (
                1,
                Heartbeat {
                    term: 3,
                    commit_index: 10,
                },
            ),
            (
                u64::MAX,
                Heartbeat {
                    term: TERM_MAX,
                    commit_index: 0,
                },
            ),
        ];
        let responses = [(5, HeartbeatResponse { term: 2 })];
        for (hb, resp) in [
            (&heartbeats[..], &responses[..]),
            (&[][..], &[][..]),
            (&heartbeats[..], &[][..]),
        ] {
            let bytes = encode(&to_heartbeat_batch(4, 9, hb, resp)).expect("encode");
            let mut scratch = FrameBuffer::new();
            let Ok(DecodedFrame::HeartbeatBatch(archived)) = decode(&bytes, &mut scratch) else {
                panic!("decode failed");
            };
            let back = from_archived_batch(archived).expect("valid batch");
            assert_eq!(
                back,
                IncomingHeartbeats {
                    from: 4,
                    to: 9,
                    heartbeats: hb.to_vec(),
                    responses: resp.to_vec(),
                }
            );
        }
    }

    fn wire_frame(message: net::Message) -> net::ReplicationFrame {
        net::ReplicationFrame {
            group: 3,
            from: 1,
            to: 2,
            message,
        }
    }

    fn wire_id(index: u64, term: u64) -> net::EntryId {
        net::EntryId { index, term }
    }

    #[test]
    fn nonsense_archives_are_refused() {
        let append = |term, prev, entries: Vec<net::EntryId>, commit_index| {
            net::Message::Append(net::AppendRequest {
                term,
                prev,
                entries,
                commit_index,
                payloads: vec![],
            })
        };
        let malformed = [
            net::Message::TimeoutNow(net::TimeoutNow { term: 0 }),
            net::Message::HeartbeatResponse(net::HeartbeatResponse { term: TERM_MAX + 1 }),
            net::Message::PreVoteResponse(net::VoteResponse {
                term: u64::MAX,
                granted: true,
            }),
            net::Message::Vote(net::VoteRequest {
                term: 3,
                last: wire_id(5, 4),
                transfer: false,
            }),
            net::Message::PreVote(net::VoteRequest {
                term: 3,
                last: wire_id(INDEX_MAX + 1, 1),
                transfer: false,
            }),
            // Entries out of order, a gap, a decreasing term, term 0, a term above
            // the message's, a commit index out of range.
            append(5, wire_id(1, 1), vec![wire_id(3, 1), wire_id(2, 1)], 0),
            append(5, wire_id(1, 1), vec![wire_id(2, 1), wire_id(4, 1)], 0),
            append(5, wire_id(1, 3), vec![wire_id(2, 2)], 0),
            append(5, wire_id(0, 0), vec![wire_id(1, 0)], 0),
            append(5, wire_id(0, 0), vec![wire_id(1, 6)], 0),
            append(5, wire_id(INDEX_MAX, 1), vec![wire_id(INDEX_MAX + 1, 1)], 0),
            append(5, wire_id(0, 0), vec![], INDEX_MAX + 1),
            net::Message::AppendResponse(net::AppendResponse {
                term: 2,
                outcome: net::AppendOutcome::Accepted {
                    matching_index: 3,
                    durable_index: 4,
                },
            }),
            net::Message::AppendResponse(net::AppendResponse {
                term: 2,
                outcome: net::AppendOutcome::Rejected {
                    prev_index: 3,
                    hint: net::ConflictHint {
                        term: None,
                        index: u64::MAX,
                    },
                },
            }),
            net::Message::Heartbeat(net::Heartbeat {
                term: 1,
                commit_index: u64::MAX,
            }),
            // A valid log that is not committed, or ends in a later term.
            net::Message::InstallSnapshot(net::InstallSnapshot {
                term: 4,
                commit_index: 5,
                base: wire_id(0, 0),
                term_starts: vec![wire_id(1, 2)],
                last_index: 6,
            }),
            net::Message::InstallSnapshot(net::InstallSnapshot {
                term: 4,
                commit_index: 6,
                base: wire_id(0, 0),
                term_starts: vec![wire_id(1, 5)],
                last_index: 6,
            }),
        ];
        for message in malformed {
            let err = through_wire(&wire_frame(message.clone())).expect_err("must be refused");
            assert!(
                matches!(
                    err,
                    WireError::Malformed {
                        group: 3,
                        from: 1,
                        ..
                    }
                ),
                "{message:?}: {err:?}"
            );
        }
        let bad_logs = [
            // last below base, start out of range, starts not increasing, first
            // start missing, term 0, index too large.
            (wire_id(5, 1), vec![], 4),
            (wire_id(0, 0), vec![wire_id(1, 1), wire_id(9, 2)], 4),
            (wire_id(0, 0), vec![wire_id(1, 2), wire_id(3, 1)], 4),
            (wire_id(0, 0), vec![wire_id(2, 1)], 4),
            (wire_id(0, 0), vec![wire_id(1, 0)], 4),
            (wire_id(0, 0), vec![wire_id(1, 1)], u64::MAX),
        ];
        for (base, term_starts, last_index) in bad_logs {
            let message = net::Message::InstallSnapshot(net::InstallSnapshot {
                term: 4,
                commit_index: 4,
                base,
                term_starts,
                last_index,
            });
            let err = through_wire(&wire_frame(message.clone())).expect_err("must be refused");
            assert!(
                matches!(
                    err,
                    WireError::InvalidSnapshotLog {
                        group: 3,
                        from: 1,
                        ..
                    }
                ),
                "{message:?}: {err:?}"
            );
        }
    }

    #[test]
    fn nonsense_heartbeat_batches_are_refused() {
        let good = net::GroupHeartbeat {
            group: 1,
            heartbeat: net::Heartbeat {
                term: 1,
                commit_index: 1,
            },
        };
        let cases = [
            (
                vec![
                    good,
                    net::GroupHeartbeat {
                        group: 8,
                        heartbeat: net::Heartbeat {
                            term: 0,
                            commit_index: 1,
                        },
                    },
                ],
                vec![],
                8,
            ),
            (
                vec![net::GroupHeartbeat {
                    group: 9,
                    heartbeat: net::Heartbeat {
                        term: 1,
                        commit_index: INDEX_MAX + 1,
                    },
                }],
                vec![],
                9,
            ),
            (
                vec![good],
                vec![net::GroupHeartbeatResponse {
                    group: 10,
                    response: net::HeartbeatResponse { term: TERM_MAX + 1 },
                }],
                10,
            ),
        ];
        for (heartbeats, responses, bad_group) in cases {
            let batch = net::HeartbeatBatch {
                from: 4,
                to: 5,
                heartbeats,
                responses,
            };
            let bytes = encode(&batch).expect("encode");
            let mut scratch = FrameBuffer::new();
            let Ok(DecodedFrame::HeartbeatBatch(archived)) = decode(&bytes, &mut scratch) else {
                panic!("decode failed");
            };
            let err = from_archived_batch(archived).expect_err("must be refused");
            assert!(
                matches!(err, WireError::MalformedHeartbeat { group, from: 4, .. } if group == bad_group),
                "{err:?}"
            );
        }
    }

    /// Mutated frames never panic through decode and conversion. Most mutations get
    /// their CRC fixed so they reach rkyv validation and the conversion instead of
    /// stopping at the checksum.
    #[test]
    fn fuzzed_frames_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5742_414e_4457_4952);
        let mut encoded: Vec<Vec<u8>> = samples()
            .into_iter()
            .map(|(msg, payloads)| {
                encode(&to_frame(rng.u64(..), 1, 2, &msg, payloads))
                    .expect("encode")
                    .to_vec()
            })
            .collect();
        let hb = [(
            2,
            Heartbeat {
                term: 3,
                commit_index: 4,
            },
        )];
        let resp = [(2, HeartbeatResponse { term: 3 })];
        encoded.push(
            encode(&to_heartbeat_batch(1, 2, &hb, &resp))
                .expect("encode")
                .to_vec(),
        );
        let (mut converted, mut refused) = (0usize, 0usize);
        let mut scratch = FrameBuffer::new();
        for _ in 0..20_000 {
            let mut bytes = encoded[rng.usize(..encoded.len())].clone();
            for _ in 0..rng.usize(1..=4) {
                match rng.u8(..4) {
                    // Flip bits or overwrite a byte of the body.
                    0 | 1 if bytes.len() > FRAME_HEADER_BYTES => {
                        let at = rng.usize(FRAME_HEADER_BYTES..bytes.len());
                        if rng.bool() {
                            bytes[at] ^= 1 << rng.u8(..8);
                        } else {
                            bytes[at] = rng.u8(..);
                        }
                    }
                    // Overwrite a little-endian u64 with an interesting value.
                    2 if bytes.len() >= FRAME_HEADER_BYTES + 8 => {
                        let at = rng.usize(FRAME_HEADER_BYTES..=bytes.len() - 8);
                        let value = [0, 1, u64::MAX, TERM_MAX + 1, INDEX_MAX + 1, rng.u64(..)]
                            [rng.usize(..6)];
                        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
                    }
                    // Truncate or extend.
                    _ => {
                        if rng.bool() {
                            bytes.truncate(rng.usize(..=bytes.len()));
                        } else {
                            bytes.push(rng.u8(..));
                        }
                    }
                }
            }
            if rng.u8(..10) != 0 && bytes.len() >= FRAME_HEADER_BYTES {
                let body = (bytes.len() - FRAME_HEADER_BYTES) as u32;
                let crc = crc32c::crc32c(&bytes[FRAME_HEADER_BYTES..]);
                bytes[8..12].copy_from_slice(&body.to_le_bytes());
                bytes[12..16].copy_from_slice(&crc.to_le_bytes());
            }
            // A Vec<u8> is not 16-aligned in general: copy into an aligned buffer
            // half the time so both decode paths are exercised.
            let mut aligned = FrameBuffer::new();
            let input: &[u8] = if rng.bool() {
                aligned.extend_from_slice(&bytes);
                aligned.as_slice()
            } else {
                &bytes
            };
            match decode(input, &mut scratch) {
                Ok(DecodedFrame::Replication(frame)) => match from_archived(frame) {
                    Ok(incoming) => {
                        assert!(incoming.message.is_well_formed());
                        let n = incoming.payloads.len();
                        if let Message::Append(append) = &incoming.message {
                            assert!(n == 0 || n == append.entries.len());
                        } else {
                            assert_eq!(n, 0);
                        }
                        converted += 1;
                    }
                    Err(_) => refused += 1,
                },
                Ok(DecodedFrame::HeartbeatBatch(batch)) => match from_archived_batch(batch) {
                    Ok(_) => converted += 1,
                    Err(_) => refused += 1,
                },
                // Not made by this fuzz (it mutates replication frames only).
                Ok(DecodedFrame::Cluster(_)) => {}
                Err(_) => {}
            }
        }
        // The fuzz reaches the conversion both ways, not only the frame checks.
        assert!(converted > 100, "converted {converted}");
        assert!(refused > 10, "refused {refused}");
    }
}
