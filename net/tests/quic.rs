//! The QUIC transport between nodes, over real UDP on 127.0.0.1: frames both ways on
//! several stream keys (in order per key, zero-copy decodable), a large frame, peers
//! with certificates from another CA or another cluster (not one frame gets through),
//! and reconnection after the receiver restarts on the same address.
//!
//! Certificates are made here the way `strand cert` makes them (CN `strand-node-N`,
//! O the cluster id, IP SAN 127.0.0.1, ECDSA P-256).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use strand_net::quic::{
    Incoming, QuicError, SendError, TlsFiles, Transport, TransportConfig, TransportStats,
};
use strand_net::replication::{
    decode, encode, is_zero_copy_aligned, AppendRequest, DecodedFrame, EntryId, FrameBuffer,
    HeartbeatBatch, Message, ReplicationFrame, VoteResponse,
};
use tempfile::TempDir;

const CLUSTER: &str = "test-cluster";

fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "strand_net=info".into()),
        )
        .with_test_writer()
        .try_init();
    glommio::LocalExecutorBuilder::default()
        .io_memory(4 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// A cluster CA, as `strand cert ca` makes it.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    cluster: String,
}

impl Ca {
    fn new(cluster: &str) -> Ca {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("strand cluster CA ({cluster})"));
        dn.push(DnType::OrganizationName, cluster);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        Ca {
            issuer,
            cluster: cluster.into(),
        }
    }

    fn pem(&self) -> String {
        AsRef::<rcgen::Certificate>::as_ref(&self.issuer).pem()
    }

    /// A node directory: `node.pem`/`node.key` signed by this CA for `cluster` (the
    /// CA's own unless overridden), and `ca.pem` from `trust`.
    fn node(&self, node_id: u32, cluster: Option<&str>, trust: &Ca) -> TempDir {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("strand-node-{node_id}"));
        dn.push(
            DnType::OrganizationName,
            cluster.unwrap_or(&self.cluster).to_string(),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("node key");
        let cert = params.signed_by(&key, &self.issuer).expect("node cert");
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "node.pem", &cert.pem());
        write(dir.path(), "node.key", &key.serialize_pem());
        write(dir.path(), "ca.pem", &trust.pem());
        dir
    }
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).expect("write cert file");
}

fn config(dir: &TempDir, cluster: &str, node_id: u32) -> TransportConfig {
    TransportConfig::new(cluster, node_id, TlsFiles::from_dir(dir.path()))
}

fn bind(dir: &TempDir, cluster: &str, node_id: u32) -> Rc<Transport> {
    let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    Transport::bind(addr, config(dir, cluster, node_id)).expect("bind")
}

/// A small real frame whose `group` carries a sequence number.
fn seq_frame(from: u32, to: u32, stream: u64, seq: u64) -> FrameBuffer {
    let frame = ReplicationFrame {
        group: seq,
        from,
        to,
        message: Message::VoteResponse(VoteResponse {
            term: stream,
            granted: true,
        }),
    };
    encode(&frame).expect("encode")
}

fn heartbeat_frame(from: u32, to: u32) -> FrameBuffer {
    let batch = HeartbeatBatch {
        from,
        to,
        heartbeats: Vec::new(),
        responses: Vec::new(),
    };
    encode(&batch).expect("encode")
}

async fn recv_within(transport: &Transport, wait: Duration) -> Option<Incoming> {
    futures_lite::future::or(transport.recv(), async {
        glommio::timer::sleep(wait).await;
        None
    })
    .await
}

async fn recv_n(transport: &Transport, n: usize, wait: Duration) -> Vec<Incoming> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match recv_within(transport, left).await {
            Some(incoming) => got.push(incoming),
            None => panic!("received {} of {n} frames before the deadline", got.len()),
        }
    }
    got
}

/// Decodes zero-copy, and returns `(group, term)` of a sequence frame (`None` for a
/// heartbeat batch).
fn decode_seq(incoming: &Incoming) -> Option<(u64, u64)> {
    assert!(is_zero_copy_aligned(&incoming.frame));
    let mut scratch = FrameBuffer::new();
    let decoded = decode(&incoming.frame, &mut scratch).expect("decode");
    match decoded {
        DecodedFrame::HeartbeatBatch(_) => None,
        DecodedFrame::Replication(frame) => match &frame.message {
            strand_net::replication::ArchivedMessage::VoteResponse(vote) => {
                Some((frame.group.to_native(), vote.term.to_native()))
            }
            other => panic!("unexpected message {other:?}"),
        },
        other => panic!("unexpected frame kind {:?}", other.kind()),
    }
}

const STREAMS: [u64; 4] = [0, 1, 7, u64::MAX];
const PER_STREAM: u64 = 50;

/// Sends a heartbeat batch then `PER_STREAM` sequence frames on every key.
fn send_all(from: &Transport, from_id: u32, to: u32, addr: SocketAddr) {
    for &stream in &STREAMS {
        from.send(to, addr, stream, &heartbeat_frame(from_id, to))
            .expect("send heartbeat");
    }
    for seq in 0..PER_STREAM {
        for &stream in &STREAMS {
            let frame = seq_frame(from_id, to, stream, seq);
            // Both entry points: a copy of a slice, and the encoded buffer itself.
            let sent = if seq % 2 == 0 {
                from.send(to, addr, stream, &frame)
            } else {
                from.send_buffer(to, addr, stream, frame)
            };
            sent.expect("send");
        }
    }
}

fn check_received(got: &[Incoming], from: u32) {
    let mut next = vec![None::<u64>; STREAMS.len()];
    for incoming in got {
        assert_eq!(incoming.from, from);
        let slot = STREAMS
            .iter()
            .position(|&s| s == incoming.stream)
            .expect("a stream key we sent on");
        match decode_seq(incoming) {
            None => assert_eq!(next[slot], None, "heartbeat first on its stream"),
            Some((seq, term)) => {
                assert_eq!(term, incoming.stream, "frame on the stream it was sent on");
                assert_eq!(seq, next[slot].map_or(0, |n| n + 1), "in order per stream");
                next[slot] = Some(seq);
            }
        }
    }
    assert!(next.iter().all(|n| *n == Some(PER_STREAM - 1)));
}

#[test]
fn frames_flow_both_ways_in_order_per_stream() {
    run(|| async {
        let ca = Ca::new(CLUSTER);
        let (dir_a, dir_b) = (ca.node(1, None, &ca), ca.node(2, None, &ca));
        let a = bind(&dir_a, CLUSTER, 1);
        let b = bind(&dir_b, CLUSTER, 2);
        send_all(&a, 1, 2, b.local_addr());
        send_all(&b, 2, 1, a.local_addr());
        let expected = STREAMS.len() * (PER_STREAM as usize + 1);
        let (at_b, at_a) = futures_lite::future::zip(
            recv_n(&b, expected, Duration::from_secs(10)),
            recv_n(&a, expected, Duration::from_secs(10)),
        )
        .await;
        check_received(&at_b, 1);
        check_received(&at_a, 2);
        assert_eq!(a.connected_peers(), vec![2]);
        assert_eq!(b.connected_peers(), vec![1]);
        let stats: TransportStats = a.stats();
        assert_eq!(stats.frames_sent, expected as u64);
        assert_eq!(stats.frames_received, expected as u64);
        assert_eq!(stats.frames_dropped, 0);
        assert_eq!(stats.handshake_failures, 0);
        a.closed().await;
        b.closed().await;
    });
}

#[test]
fn a_large_frame_arrives_intact() {
    run(|| async {
        let ca = Ca::new(CLUSTER);
        let (dir_a, dir_b) = (ca.node(1, None, &ca), ca.node(2, None, &ca));
        let a = bind(&dir_a, CLUSTER, 1);
        let b = bind(&dir_b, CLUSTER, 2);
        const ENTRIES: u64 = 8;
        let append = ReplicationFrame {
            group: 42,
            from: 1,
            to: 2,
            message: Message::Append(AppendRequest {
                term: 3,
                prev: EntryId { index: 9, term: 2 },
                entries: (10..10 + ENTRIES)
                    .map(|index| EntryId { index, term: 3 })
                    .collect(),
                commit_index: 9,
                payloads: (0..ENTRIES)
                    .map(|i| {
                        let bytes: Vec<u8> = (0..1024 * 1024u32)
                            .map(|j| (j.wrapping_mul(31) as u8) ^ (i as u8))
                            .collect();
                        Bytes::from(bytes)
                    })
                    .collect(),
            }),
        };
        let frame = encode(&append).expect("encode");
        assert!(frame.len() > 8 * 1024 * 1024);
        a.send(2, b.local_addr(), 5, &frame).expect("send large");
        a.send(2, b.local_addr(), 5, &seq_frame(1, 2, 5, 0))
            .expect("send small after it");
        let got = recv_n(&b, 2, Duration::from_secs(20)).await;
        assert_eq!(got[0].stream, 5);
        assert_eq!(got[0].frame.as_slice(), frame.as_slice());
        let mut scratch = FrameBuffer::new();
        match decode(&got[0].frame, &mut scratch).expect("decode") {
            DecodedFrame::Replication(archived) => {
                let owned = archived.to_owned_frame().expect("deserialize");
                assert_eq!(owned, append);
            }
            other => panic!("unexpected {:?}", other.kind()),
        }
        assert_eq!(decode_seq(&got[1]), Some((0, 5)));
        // Path MTU discovery found loopback's room for big datagrams (Ethernet's
        // 1452-byte limit would mean ~45x the packets for the same bytes).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while a.stats().datagram_bytes <= 9000 && std::time::Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            a.stats().datagram_bytes > 9000,
            "datagrams of {} bytes on loopback",
            a.stats().datagram_bytes
        );
        a.closed().await;
        b.closed().await;
    });
}

/// Sends to `to` every 100 ms for `wait`; returns what `receiver` got meanwhile.
async fn try_deliver(
    sender: &Transport,
    sender_id: u32,
    to: u32,
    receiver: &Transport,
    wait: Duration,
) -> Vec<Incoming> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while Instant::now() < deadline {
        let _ = sender.send(
            to,
            receiver.local_addr(),
            0,
            &heartbeat_frame(sender_id, to),
        );
        if let Some(incoming) = recv_within(receiver, Duration::from_millis(100)).await {
            got.push(incoming);
        }
    }
    got
}

#[test]
fn a_node_of_another_ca_cannot_deliver_a_frame() {
    run(|| async {
        let ca = Ca::new(CLUSTER);
        // Same cluster id, its own CA; it trusts our CA, so nothing fails on its side
        // of the handshake: only our checks stand between it and our inbox.
        let rogue_ca = Ca::new(CLUSTER);
        let node = bind(&ca.node(1, None, &ca), CLUSTER, 1);
        let rogue = bind(&rogue_ca.node(3, None, &ca), CLUSTER, 3);
        let (at_node, at_rogue) = futures_lite::future::zip(
            try_deliver(&rogue, 3, 1, &node, Duration::from_millis(1500)),
            try_deliver(&node, 1, 3, &rogue, Duration::from_millis(1500)),
        )
        .await;
        assert!(at_node.is_empty(), "the rogue node delivered a frame");
        assert!(
            at_rogue.is_empty(),
            "we delivered a frame to the rogue node"
        );
        assert!(node.stats().handshake_failures > 0);
        assert_eq!(node.stats().frames_received, 0);
        assert!(node.connected_peers().is_empty());
        node.closed().await;
        rogue.closed().await;
    });
}

#[test]
fn a_node_of_another_cluster_or_the_wrong_node_is_refused() {
    run(|| async {
        let ca = Ca::new(CLUSTER);
        let node = bind(&ca.node(1, None, &ca), CLUSTER, 1);
        // Signed by our CA, but for another cluster.
        let stranger = bind(&ca.node(4, Some("other-cluster"), &ca), "other-cluster", 4);
        let at_node = try_deliver(&stranger, 4, 1, &node, Duration::from_millis(1000)).await;
        assert!(
            at_node.is_empty(),
            "a node of another cluster delivered a frame"
        );
        assert!(node.stats().handshake_failures > 0);
        let at_stranger = try_deliver(&node, 1, 4, &stranger, Duration::from_millis(500)).await;
        assert!(at_stranger.is_empty());

        // A valid node of our cluster, dialled as if it were node 5.
        let two = bind(&ca.node(2, None, &ca), CLUSTER, 2);
        let failures = node.stats().handshake_failures;
        let at_two = try_deliver(&node, 1, 5, &two, Duration::from_millis(500)).await;
        assert!(at_two.is_empty(), "a frame for node 5 reached node 2");
        assert!(node.stats().handshake_failures > failures);
        node.closed().await;
        stranger.closed().await;
        two.closed().await;
    });
}

#[test]
fn the_sender_reconnects_after_the_receiver_restarts() {
    run(|| async {
        let ca = Ca::new(CLUSTER);
        let (dir_a, dir_b) = (ca.node(1, None, &ca), ca.node(2, None, &ca));
        let a = bind(&dir_a, CLUSTER, 1);
        let b = bind(&dir_b, CLUSTER, 2);
        let addr = b.local_addr();
        a.send(2, addr, 0, &seq_frame(1, 2, 0, 0)).expect("send");
        let got = recv_n(&b, 1, Duration::from_secs(5)).await;
        assert_eq!(decode_seq(&got[0]), Some((0, 0)));

        b.closed().await;
        drop(b);
        let b = rebind(addr, config(&dir_b, CLUSTER, 2)).await;

        // Like Raft: resend until something gets through.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seq = 1;
        let first = loop {
            assert!(Instant::now() < deadline, "no frame after the restart");
            match a.send(2, addr, 0, &seq_frame(1, 2, 0, seq)) {
                Ok(()) | Err(SendError::Unreachable { .. }) => {}
                Err(e) => panic!("send: {e}"),
            }
            seq += 1;
            if let Some(incoming) = recv_within(&b, Duration::from_millis(50)).await {
                break incoming;
            }
        };
        let (first_seq, _) = decode_seq(&first).expect("a sequence frame");
        // Later frames on the new connection arrive, in order.
        for later in seq..seq + 10 {
            a.send(2, addr, 0, &seq_frame(1, 2, 0, later))
                .expect("send");
        }
        let mut last = first_seq;
        let want = seq + 9;
        while last < want {
            let incoming = recv_within(&b, Duration::from_secs(5))
                .await
                .expect("frames after reconnecting");
            let (next, _) = decode_seq(&incoming).expect("a sequence frame");
            assert!(next > last, "in order: {next} after {last}");
            last = next;
        }
        assert_eq!(a.connected_peers(), vec![2]);
        a.closed().await;
        b.closed().await;
    });
}

fn append_frame(group: u64, payload_bytes: usize) -> FrameBuffer {
    encode(&ReplicationFrame {
        group,
        from: 1,
        to: 2,
        message: Message::Append(AppendRequest {
            term: 1,
            prev: EntryId { index: 0, term: 0 },
            entries: vec![EntryId { index: 1, term: 1 }],
            commit_index: 0,
            payloads: vec![Bytes::from(vec![group as u8; payload_bytes])],
        }),
    })
    .expect("encode")
}

fn group_of(incoming: &Incoming) -> u64 {
    let mut scratch = FrameBuffer::new();
    match decode(&incoming.frame, &mut scratch).expect("decode") {
        DecodedFrame::Replication(frame) => frame.group.to_native(),
        other => panic!("unexpected frame kind {:?}", other.kind()),
    }
}

#[test]
fn a_receiver_that_does_not_take_frames_holds_the_sender_back() {
    run(|| async {
        let ca = Ca::new(CLUSTER);
        let (dir_a, dir_b) = (ca.node(1, None, &ca), ca.node(2, None, &ca));
        let a = bind(&dir_a, CLUSTER, 1);
        let mut config_b = config(&dir_b, CLUSTER, 2);
        config_b.received_bytes_max = 64 * 1024;
        let b = Transport::bind("127.0.0.1:0".parse().expect("addr"), config_b).expect("bind");
        const FRAMES: u64 = 500;
        for group in 0..FRAMES {
            a.send(2, b.local_addr(), 3, &append_frame(group, 4096))
                .expect("send");
        }
        glommio::timer::sleep(Duration::from_millis(300)).await;
        // Reading stopped near the limit (a chunk of stream data past it at most).
        let received = b.stats().frames_received;
        assert!(received < 100, "{received} frames read past the limit");
        let got = recv_n(&b, FRAMES as usize, Duration::from_secs(10)).await;
        for (want, incoming) in got.iter().enumerate() {
            assert_eq!(group_of(incoming), want as u64);
        }
        a.closed().await;
        b.closed().await;
    });
}

#[test]
fn frames_over_the_queue_limit_are_dropped_and_counted() {
    run(|| async {
        let ca = Ca::new(CLUSTER);
        let dir_a = ca.node(1, None, &ca);
        let mut config_a = config(&dir_a, CLUSTER, 1);
        config_a.queued_bytes_max = 64 * 1024;
        let a = Transport::bind("127.0.0.1:0".parse().expect("addr"), config_a).expect("bind");
        // Nothing answers there: the connection stays in its handshake, frames queue.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = silent.local_addr().expect("addr");
        let frame = append_frame(0, 4000);
        let mut queued = 0;
        let refused = loop {
            match a.send(2, to, 0, &frame) {
                Ok(()) => queued += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(refused, SendError::QueueFull { to: 2, .. }));
        assert_eq!(queued, 64 * 1024 / frame.len());
        assert_eq!(a.stats().frames_dropped, 1);
        assert!(a.connected_peers().is_empty());
        a.closed().await;
        assert_eq!(a.stats().frames_dropped, 1 + queued as u64);
    });
}

/// The old socket's last in-flight receive may hold the port for a moment.
async fn rebind(addr: SocketAddr, config: TransportConfig) -> Rc<Transport> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match Transport::bind(addr, config.clone()) {
            Ok(transport) => return transport,
            Err(QuicError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("rebind {addr}: {e}"),
        }
    }
}

#[test]
fn setup_errors_name_the_file() {
    run(|| async {
        let missing = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let err = Transport::bind(addr, config(&missing, CLUSTER, 1)).expect_err("no files");
        assert!(
            matches!(&err, QuicError::TlsFileRead { path, .. } if path.ends_with("node.pem") || path.ends_with("ca.pem"))
        );
        assert!(err
            .to_string()
            .contains(&missing.path().display().to_string()));

        let ca = Ca::new(CLUSTER);
        let dir = ca.node(1, None, &ca);
        let err = Transport::bind(addr, config(&dir, CLUSTER, 2)).expect_err("wrong node id");
        assert!(matches!(err, QuicError::NodeCertificateMismatch { .. }));
        let err = Transport::bind(addr, config(&dir, "elsewhere", 1)).expect_err("wrong cluster");
        assert!(matches!(err, QuicError::NodeCertificateMismatch { .. }));

        write(dir.path(), "node.key", "not a key");
        let err = Transport::bind(addr, config(&dir, CLUSTER, 1)).expect_err("bad key");
        assert!(matches!(
            err,
            QuicError::TlsFileInvalid {
                what: "node key",
                ..
            }
        ));

        let taken = bind(&ca.node(1, None, &ca), CLUSTER, 1);
        let err = Transport::bind(
            taken.local_addr(),
            config(&ca.node(1, None, &ca), CLUSTER, 1),
        )
        .expect_err("address in use");
        assert!(matches!(err, QuicError::Bind { .. }));
        taken.closed().await;
    });
}

#[test]
fn send_refuses_what_is_not_one_frame() {
    run(|| async {
        let ca = Ca::new(CLUSTER);
        let a = bind(&ca.node(1, None, &ca), CLUSTER, 1);
        let to: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let frame = heartbeat_frame(1, 2);
        assert!(matches!(
            a.send(2, to, 0, &frame[..frame.len() - 1]),
            Err(SendError::FrameLength { .. })
        ));
        assert!(matches!(
            a.send(2, to, 0, b"definitely not a frame"),
            Err(SendError::InvalidFrame(_))
        ));
        a.close();
        assert!(matches!(a.send(2, to, 0, &frame), Err(SendError::Closed)));
        assert!(a.recv().await.is_none());
        a.closed().await;
    });
}

/// A rough throughput figure: `cargo test -p strand-net --release --test quic -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    run(|| async {
        let ca = Ca::new(CLUSTER);
        let (dir_a, dir_b) = (ca.node(1, None, &ca), ca.node(2, None, &ca));
        let a = bind(&dir_a, CLUSTER, 1);
        let b = bind(&dir_b, CLUSTER, 2);
        let payload = Bytes::from(vec![7u8; 64 * 1024]);
        let frame = encode(&ReplicationFrame {
            group: 1,
            from: 1,
            to: 2,
            message: Message::Append(AppendRequest {
                term: 1,
                prev: EntryId { index: 0, term: 0 },
                entries: vec![EntryId { index: 1, term: 1 }],
                commit_index: 0,
                payloads: vec![payload],
            }),
        })
        .expect("encode");
        let total_bytes: usize = 1 << 30;
        let frames = total_bytes / frame.len();
        let addr = b.local_addr();
        let start = Instant::now();
        let sender = {
            let a = a.clone();
            let frame = frame.clone();
            glommio::spawn_local(async move {
                let mut sent = 0;
                while sent < frames {
                    match a.send(2, addr, (sent % 8) as u64, &frame) {
                        Ok(()) => sent += 1,
                        Err(_) => glommio::timer::sleep(Duration::from_micros(200)).await,
                    }
                }
            })
        };
        recv_n(&b, frames, Duration::from_secs(120)).await;
        sender.await;
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{frames} frames of {} bytes in {secs:.2} s: {:.0} MB/s",
            frame.len(),
            (frames * frame.len()) as f64 / secs / 1e6
        );
        a.closed().await;
        b.closed().await;
    });
}
