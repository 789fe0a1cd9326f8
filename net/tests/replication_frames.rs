//! Replication frames (issue 5): round trips of every message kind, both alignment
//! paths of `decode`, and hostile input: a seeded mutation fuzz, valid CRCs over
//! garbage archives, and huge length claims.
//!
//! The fuzz prints its seed; replay one with `STRAND_FRAME_FUZZ_SEED=N`.

use bytes::Bytes;
use strand_net::replication::{
    decode, encode, is_zero_copy_aligned, AppendOutcome, AppendRequest, AppendResponse,
    ClusterFrame, ClusterMessage, ConflictHint, DecodedFrame, EncodeError, EntryId, FrameBuffer,
    FrameError, FrameHeader, FrameKind, GroupHeartbeat, GroupHeartbeatResponse, GroupLeader,
    Heartbeat, HeartbeatBatch, HeartbeatResponse, InstallSnapshot, Message, ReplicationFrame,
    TimeoutNow, VoteRequest, VoteResponse, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES, FRAME_MAGIC,
    FRAME_VERSION,
};

fn entry(index: u64, term: u64) -> EntryId {
    EntryId { index, term }
}

fn frame(group: u64, message: Message) -> ReplicationFrame {
    ReplicationFrame {
        group,
        from: 1,
        to: 2,
        message,
    }
}

/// One frame of every message kind (and both append outcomes, both hint forms,
/// appends with and without payloads).
fn samples() -> Vec<ReplicationFrame> {
    let vote = VoteRequest {
        term: 7,
        last: entry(41, 6),
        transfer: true,
    };
    vec![
        frame(1, Message::PreVote(vote)),
        frame(
            2,
            Message::PreVoteResponse(VoteResponse {
                term: 7,
                granted: true,
            }),
        ),
        frame(
            3,
            Message::Vote(VoteRequest {
                transfer: false,
                ..vote
            }),
        ),
        frame(
            4,
            Message::VoteResponse(VoteResponse {
                term: 9,
                granted: false,
            }),
        ),
        frame(
            5,
            Message::Append(AppendRequest {
                term: 7,
                prev: entry(41, 6),
                entries: vec![entry(42, 6), entry(43, 7), entry(44, 7)],
                commit_index: 40,
                payloads: vec![
                    Bytes::from_static(b"batch one"),
                    Bytes::new(),
                    Bytes::from(vec![0xAB; 5000]),
                ],
            }),
        ),
        frame(
            6,
            Message::Append(AppendRequest {
                term: 7,
                prev: entry(44, 7),
                entries: vec![entry(45, 7)],
                commit_index: 44,
                payloads: Vec::new(),
            }),
        ),
        frame(
            u64::MAX,
            Message::Append(AppendRequest {
                term: 7,
                prev: entry(44, 7),
                entries: Vec::new(),
                commit_index: 44,
                payloads: Vec::new(),
            }),
        ),
        frame(
            7,
            Message::AppendResponse(AppendResponse {
                term: 7,
                outcome: AppendOutcome::Accepted {
                    matching_index: 44,
                    durable_index: 43,
                },
            }),
        ),
        frame(
            8,
            Message::AppendResponse(AppendResponse {
                term: 7,
                outcome: AppendOutcome::Rejected {
                    prev_index: 41,
                    hint: ConflictHint {
                        term: Some(5),
                        index: 30,
                    },
                },
            }),
        ),
        frame(
            9,
            Message::AppendResponse(AppendResponse {
                term: 7,
                outcome: AppendOutcome::Rejected {
                    prev_index: 41,
                    hint: ConflictHint {
                        term: None,
                        index: 12,
                    },
                },
            }),
        ),
        frame(
            10,
            Message::Heartbeat(Heartbeat {
                term: 7,
                commit_index: 44,
            }),
        ),
        frame(
            11,
            Message::HeartbeatResponse(HeartbeatResponse { term: 7 }),
        ),
        frame(
            12,
            Message::InstallSnapshot(InstallSnapshot {
                term: 7,
                commit_index: 44,
                base: entry(10, 2),
                term_starts: vec![entry(11, 3), entry(20, 5), entry(40, 7)],
                last_index: 44,
            }),
        ),
        frame(13, Message::TimeoutNow(TimeoutNow { term: 7 })),
    ]
}

fn heartbeat_batch() -> HeartbeatBatch {
    HeartbeatBatch {
        from: 3,
        to: 1,
        heartbeats: (0..100)
            .map(|group| GroupHeartbeat {
                group,
                heartbeat: Heartbeat {
                    term: group + 1,
                    commit_index: group * 10,
                },
            })
            .collect(),
        responses: (500..520)
            .map(|group| GroupHeartbeatResponse {
                group,
                response: HeartbeatResponse { term: 4 },
            })
            .collect(),
    }
}

/// Every sample as encoded bytes, heartbeat batches included.
fn encoded_samples() -> Vec<FrameBuffer> {
    let mut all: Vec<FrameBuffer> = samples().iter().map(|f| encode(f).unwrap()).collect();
    all.push(encode(&heartbeat_batch()).unwrap());
    all.push(
        encode(&HeartbeatBatch {
            from: 1,
            to: 2,
            heartbeats: Vec::new(),
            responses: Vec::new(),
        })
        .unwrap(),
    );
    all
}

/// A frame with a correct header (and CRC) around an arbitrary body.
fn frame_around(kind: FrameKind, body: &[u8]) -> FrameBuffer {
    let mut out = FrameBuffer::new();
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    out.extend_from_slice(&FRAME_VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u16).to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn decode_replication(bytes: &[u8], scratch: &mut FrameBuffer) -> ReplicationFrame {
    match decode(bytes, scratch) {
        Ok(DecodedFrame::Replication(archived)) => archived.to_owned_frame().unwrap(),
        other => panic!("expected a replication frame, got {other:?}"),
    }
}

#[test]
fn every_message_kind_round_trips_zero_copy() {
    for original in samples() {
        let bytes = encode(&original).unwrap();
        assert!(
            is_zero_copy_aligned(&bytes),
            "encode returns an aligned buffer"
        );
        let header = FrameHeader::parse(&bytes).unwrap();
        assert_eq!(header.kind, FrameKind::Replication);
        assert_eq!(header.frame_bytes(), bytes.len());
        let mut scratch = FrameBuffer::new();
        assert_eq!(decode_replication(&bytes, &mut scratch), original);
        assert!(scratch.is_empty(), "the aligned path must not copy");
        assert_eq!(scratch.capacity(), 0, "the aligned path must not allocate");
    }
}

#[test]
fn append_payloads_are_borrowed_from_the_frame() {
    let original = &samples()[4];
    let bytes = encode(original).unwrap();
    let mut scratch = FrameBuffer::new();
    let Ok(DecodedFrame::Replication(archived)) = decode(&bytes, &mut scratch) else {
        panic!("decode failed");
    };
    let strand_net::replication::ArchivedMessage::Append(append) = &archived.message else {
        panic!("not an append");
    };
    assert_eq!(append.entries.len(), 3);
    assert_eq!(append.entries[1].term.to_native(), 7);
    assert_eq!(append.commit_index.to_native(), 40);
    let range = bytes.as_slice().as_ptr_range();
    for (payload, want) in append
        .payloads
        .iter()
        .zip([&b"batch one"[..], b"", &[0xAB; 5000]])
    {
        assert_eq!(payload.as_slice(), want);
        assert!(range.contains(&payload.as_slice().as_ptr()) || want.is_empty());
    }
}

#[test]
fn heartbeat_batch_round_trips() {
    let original = heartbeat_batch();
    let bytes = encode(&original).unwrap();
    assert_eq!(
        FrameHeader::parse(&bytes).unwrap().kind,
        FrameKind::HeartbeatBatch
    );
    let mut scratch = FrameBuffer::new();
    let Ok(DecodedFrame::HeartbeatBatch(archived)) = decode(&bytes, &mut scratch) else {
        panic!("expected a heartbeat batch");
    };
    assert_eq!(archived.heartbeats.len(), 100);
    assert_eq!(archived.heartbeats[99].group.to_native(), 99);
    assert_eq!(archived.to_owned_batch().unwrap(), original);
}

#[test]
fn cluster_frames_round_trip_zero_copy() {
    let original = ClusterFrame {
        from: 3,
        message: ClusterMessage::Leaders {
            leaders: (0..50)
                .map(|g| GroupLeader {
                    group: g,
                    term: g + 1,
                    isr: vec![1, 2, 3],
                })
                .collect(),
        },
    };
    let bytes = encode(&original).expect("encode");
    assert!(is_zero_copy_aligned(&bytes));
    let mut scratch = FrameBuffer::new();
    let Ok(DecodedFrame::Cluster(archived)) = decode(&bytes, &mut scratch) else {
        panic!("expected a cluster frame");
    };
    assert_eq!(archived.to_owned_frame().unwrap(), original);
    assert!(scratch.is_empty(), "read in place");
    let forward = ClusterFrame {
        from: 1,
        message: ClusterMessage::Forward {
            command: b"{\"remove_topic\":{\"name\":\"t\"}}".to_vec(),
        },
    };
    let bytes = encode(&forward).expect("encode");
    let Ok(DecodedFrame::Cluster(archived)) = decode(&bytes, &mut scratch) else {
        panic!("expected a cluster frame");
    };
    assert_eq!(archived.to_owned_frame().unwrap(), forward);
}

/// A frame at any offset: 16-byte multiples are read in place, every other offset
/// takes the one-copy path, and both give the same frame.
#[test]
fn misaligned_input_is_copied_once_then_read() {
    for original in samples() {
        let encoded = encode(&original).unwrap();
        for offset in 0..=32 {
            let mut buffer = FrameBuffer::new();
            buffer.extend_from_slice(&vec![0xEE; offset]);
            buffer.extend_from_slice(&encoded);
            let bytes = &buffer[offset..];
            let mut scratch = FrameBuffer::new();
            assert_eq!(decode_replication(bytes, &mut scratch), original);
            if offset % 16 == 0 {
                assert!(
                    scratch.is_empty(),
                    "offset {offset}: aligned, read in place"
                );
            } else {
                assert_eq!(
                    scratch.len(),
                    encoded.len() - FRAME_HEADER_BYTES,
                    "offset {offset}: the body, and only the body, is copied"
                );
            }
        }
    }
}

#[test]
fn scratch_is_reused_across_frames() {
    let mut scratch = FrameBuffer::new();
    let mut previous = None;
    for original in samples() {
        let encoded = encode(&original).unwrap();
        let mut buffer = FrameBuffer::new();
        buffer.push(0);
        buffer.extend_from_slice(&encoded);
        assert_eq!(decode_replication(&buffer[1..], &mut scratch), original);
        assert_eq!(scratch.len(), encoded.len() - FRAME_HEADER_BYTES);
        previous = Some(scratch.len());
    }
    assert!(previous.is_some());
}

#[test]
fn header_errors_name_what_was_wrong() {
    let good = encode(&samples()[0]).unwrap();
    let mut scratch = FrameBuffer::new();

    assert!(matches!(
        decode(&good[..10], &mut scratch),
        Err(FrameError::HeaderTruncated { got: 10 })
    ));

    let mut bad = good.clone();
    bad[0] ^= 0xFF;
    let err = decode(&bad, &mut scratch).unwrap_err();
    assert!(matches!(err, FrameError::BadMagic { .. }));
    assert!(err.to_string().contains("magic"), "{err}");

    let mut bad = good.clone();
    bad[4..6].copy_from_slice(&(FRAME_VERSION + 1).to_le_bytes());
    assert!(matches!(
        decode(&bad, &mut scratch),
        Err(FrameError::UnsupportedVersion { got, .. }) if got == FRAME_VERSION + 1
    ));

    let mut bad = good.clone();
    bad[6..8].copy_from_slice(&77u16.to_le_bytes());
    assert!(matches!(
        decode(&bad, &mut scratch),
        Err(FrameError::UnknownKind { got: 77 })
    ));

    let mut bad = good.clone();
    bad[FRAME_HEADER_BYTES] ^= 1;
    assert!(matches!(
        decode(&bad, &mut scratch),
        Err(FrameError::ChecksumMismatch { .. })
    ));

    assert!(matches!(
        decode(&good[..good.len() - 1], &mut scratch),
        Err(FrameError::BodyTruncated { .. })
    ));

    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 3]);
    assert!(matches!(
        decode(&longer, &mut scratch),
        Err(FrameError::TrailingBytes { extra: 3 })
    ));
    assert!(
        scratch.is_empty(),
        "nothing was copied for a refused header"
    );
}

/// A length claim over the limit is refused from the header alone, and a claim
/// under the limit but beyond the input is refused before the scratch buffer grows.
#[test]
fn huge_length_claims_are_refused_before_allocation() {
    let mut header = encode(&samples()[0]).unwrap()[..FRAME_HEADER_BYTES].to_vec();
    for claim in [u32::MAX, FRAME_BODY_BYTES_MAX as u32 + 1] {
        header[8..12].copy_from_slice(&claim.to_le_bytes());
        assert!(matches!(
            FrameHeader::parse(&header),
            Err(FrameError::BodyTooLarge { body_bytes, .. }) if body_bytes == claim as usize
        ));
    }
    header[8..12].copy_from_slice(&(FRAME_BODY_BYTES_MAX as u32).to_le_bytes());
    let parsed = FrameHeader::parse(&header).unwrap();
    assert_eq!(parsed.body_bytes, FRAME_BODY_BYTES_MAX);
    // Misaligned on purpose: the copy path would allocate if it were reached.
    let mut buffer = vec![0u8; 1];
    buffer.extend_from_slice(&header);
    buffer.extend_from_slice(&[0; 64]);
    let mut scratch = FrameBuffer::new();
    assert!(matches!(
        decode(&buffer[1..], &mut scratch),
        Err(FrameError::BodyTruncated { expected, got: 64 }) if expected == FRAME_BODY_BYTES_MAX
    ));
    assert_eq!(scratch.capacity(), 0);
}

/// The CRC only proves the body arrived as sent; a sender can send garbage with a
/// right CRC, and validation must refuse it.
#[test]
fn garbage_with_a_correct_crc_is_refused_by_validation() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut bodies: Vec<Vec<u8>> =
        vec![Vec::new(), vec![0xFF; 8], vec![0xFF; 64], vec![0xA5; 4096]];
    for len in [1, 7, 16, 33, 100, 1000] {
        bodies.push((0..len).map(|_| rng.u8(..)).collect());
    }
    let mut scratch = FrameBuffer::new();
    for body in &bodies {
        for kind in [FrameKind::Replication, FrameKind::HeartbeatBatch] {
            let bytes = frame_around(kind, body);
            let result = decode(&bytes, &mut scratch);
            assert!(
                matches!(result, Err(FrameError::InvalidArchive { kind: k, .. }) if k == kind),
                "{kind:?} body of {} bytes: {result:?}",
                body.len()
            );
        }
    }
    // A real archive whose root pointer is corrupted (its last 4 bytes), CRC fixed.
    let good = encode(&samples()[4]).unwrap();
    let mut body = good[FRAME_HEADER_BYTES..].to_vec();
    let end = body.len();
    body[end - 4..].copy_from_slice(&0x7FFF_FFF0u32.to_le_bytes());
    let err = decode(&frame_around(FrameKind::Replication, &body), &mut scratch).unwrap_err();
    assert!(matches!(err, FrameError::InvalidArchive { .. }), "{err:?}");
    assert!(err.to_string().contains("validation"), "{err}");
}

/// What validation does not do: prove meaning. rkyv's root sits at the end of the
/// archive and zeros are valid lengths, offsets, tags and bools, so an all-zero
/// body is a well-structured `PreVote` at term 0. Safe to read, and refused later
/// by the node (`Message::is_well_formed` rejects term 0); a conversion must never
/// skip that check.
#[test]
fn an_all_zero_body_is_valid_structure_but_term_zero() {
    let mut scratch = FrameBuffer::new();
    let bytes = frame_around(FrameKind::Replication, &[0; 256]);
    let Ok(DecodedFrame::Replication(frame)) = decode(&bytes, &mut scratch) else {
        panic!("zeros are a structurally valid archive");
    };
    assert!(matches!(
        frame.message,
        strand_net::replication::ArchivedMessage::PreVote(ref vote) if vote.term == 0
    ));
}

#[test]
fn append_payload_count_must_match_entries() {
    let mut bad = samples()[4].clone();
    let Message::Append(append) = &mut bad.message else {
        unreachable!()
    };
    append.payloads.pop();
    assert!(matches!(
        encode(&bad),
        Err(EncodeError::PayloadCountMismatch {
            group: 5,
            entries: 3,
            payloads: 2
        })
    ));
    // The same frame built around the encoder's check is refused on decode.
    let body = rkyv::to_bytes::<rkyv::rancor::BoxedError>(&bad).unwrap();
    let mut scratch = FrameBuffer::new();
    assert!(matches!(
        decode(&frame_around(FrameKind::Replication, &body), &mut scratch),
        Err(FrameError::PayloadCountMismatch {
            group: 5,
            entries: 3,
            payloads: 2
        })
    ));
}

/// Seeded mutations of valid frames: bit flips, byte overwrites, truncation,
/// extension, rewritten length fields, and body mutations with the CRC fixed up
/// (so rkyv validation, not the CRC, is what stands in the way). Every case must
/// return, Ok or Err, never panic; an Ok must deserialize.
#[test]
fn mutated_frames_are_errors_not_panics() {
    let seed: u64 = std::env::var("STRAND_FRAME_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("frame fuzz seed {seed} (replay with STRAND_FRAME_FUZZ_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let originals = encoded_samples();
    let (mut ok, mut invalid_archive, mut other_errors) = (0, 0, 0);
    let mut scratch = FrameBuffer::new();
    for case in 0..20_000 {
        let original = &originals[rng.usize(..originals.len())];
        let mut bytes: Vec<u8> = original.to_vec();
        let fix_crc = rng.bool();
        for _ in 0..rng.usize(1..=4) {
            mutate(&mut rng, &mut bytes);
        }
        if fix_crc && bytes.len() >= FRAME_HEADER_BYTES {
            let crc = crc32c::crc32c(&bytes[FRAME_HEADER_BYTES..]);
            bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        }
        // Alternate between the aligned and the copy path.
        let offset = rng.usize(..16);
        let mut buffer = FrameBuffer::new();
        buffer.extend_from_slice(&vec![0; offset]);
        buffer.extend_from_slice(&bytes);
        let input = &buffer[offset..];
        match decode(input, &mut scratch) {
            Ok(DecodedFrame::Replication(frame)) => {
                frame.to_owned_frame().unwrap();
                ok += 1;
            }
            Ok(DecodedFrame::HeartbeatBatch(batch)) => {
                batch.to_owned_batch().unwrap();
                ok += 1;
            }
            Ok(DecodedFrame::Cluster(frame)) => {
                frame.to_owned_frame().unwrap();
                ok += 1;
            }
            Err(FrameError::InvalidArchive { .. }) => invalid_archive += 1,
            Err(err) => {
                // Display must not panic either.
                assert!(!err.to_string().is_empty(), "case {case}");
                other_errors += 1;
            }
        }
    }
    println!("ok {ok}, invalid archive {invalid_archive}, other errors {other_errors}");
    assert!(invalid_archive > 100, "the fuzz must reach rkyv validation");
    assert!(other_errors > 100, "the fuzz must reach the header checks");
}

fn mutate(rng: &mut fastrand::Rng, bytes: &mut Vec<u8>) {
    match rng.u8(..7) {
        0 if !bytes.is_empty() => {
            let at = rng.usize(..bytes.len());
            bytes[at] ^= 1 << rng.u8(..8);
        }
        1 if !bytes.is_empty() => {
            let at = rng.usize(..bytes.len());
            bytes[at] = rng.u8(..);
        }
        2 => {
            let len = rng.usize(..=bytes.len());
            bytes.truncate(len);
        }
        3 => {
            for _ in 0..rng.usize(1..64) {
                bytes.push(rng.u8(..));
            }
        }
        4 if bytes.len() >= FRAME_HEADER_BYTES => {
            // A length field that lies, sometimes consistently with a resize.
            let claim = match rng.u8(..3) {
                0 => rng.u32(..),
                1 => (bytes.len() - FRAME_HEADER_BYTES) as u32 ^ (1 << rng.u32(..12)),
                _ => rng.u32(..=FRAME_BODY_BYTES_MAX as u32),
            };
            bytes[8..12].copy_from_slice(&claim.to_le_bytes());
        }
        5 if bytes.len() > FRAME_HEADER_BYTES => {
            // Overwrite a little-endian u32 inside the body: lengths, relative
            // pointers, enum tags and bools all live there.
            let at = rng.usize(FRAME_HEADER_BYTES..bytes.len());
            let value = match rng.u8(..4) {
                0 => 0,
                1 => u32::MAX,
                2 => rng.u32(..256),
                _ => rng.u32(..),
            };
            for (i, b) in value.to_le_bytes().iter().enumerate() {
                if let Some(slot) = bytes.get_mut(at + i) {
                    *slot = *b;
                }
            }
        }
        _ if bytes.len() > FRAME_HEADER_BYTES => {
            // Body resized, length field kept consistent (CRC maybe fixed later).
            let body = bytes.len() - FRAME_HEADER_BYTES;
            let new_body = rng.usize(..body * 2 + 8);
            bytes.resize(FRAME_HEADER_BYTES + new_body, rng.u8(..));
            bytes[8..12].copy_from_slice(&(new_body as u32).to_le_bytes());
        }
        _ => bytes.push(rng.u8(..)),
    }
}
