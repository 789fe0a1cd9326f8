//! [`Transport`]: the QUIC endpoint of one glommio executor, its connections to and
//! from peers, and the two tasks that drive them.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use glommio::net::UdpSocket;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    Event, IdleTimeout, ReadError, StreamEvent, StreamId, Transmit, VarInt, WriteError,
};
use rustls::pki_types::CertificateDer;
use tracing::{debug, info, warn};

use super::identity::{check_identity, IdentityError};
use super::stream::{FrameReader, OutStream};
use super::{
    close_code, tls, QuicError, SendError, TlsFiles, CONNECTION_WINDOW_BYTES,
    RECONNECT_BACKOFF_MAX, RECONNECT_BACKOFF_MIN, STREAMS_PER_CONNECTION_MAX, STREAM_KEY_BYTES,
    STREAM_WINDOW_BYTES,
};
use crate::replication::{FrameBuffer, FrameHeader};

/// Datagrams the receive task handles before letting the driver run (it would
/// otherwise keep the executor for as long as datagrams keep arriving).
const RECV_BURST_DATAGRAMS: u32 = 64;
/// Datagrams sent for one connection before moving on to the next one.
const SEND_BURST_DATAGRAMS: u32 = 64;
/// Connections of the endpoint, ours and peers': handshakes from anyone who can reach
/// the port cost memory until they fail, so past this new ones are refused.
const CONNECTIONS_MAX: usize = 4096;
/// Received datagrams are carved out of buffers of this size, so a datagram costs no
/// allocation of its own.
const RECV_POOL_BYTES: usize = 1024 * 1024;
/// The largest UDP payload we send (if path MTU discovery finds the path takes it)
/// and accept: the most an IPv4 datagram carries. Discovery starts at 1200 bytes and
/// only goes as high as the path allows: 1452 on an Ethernet link, 8972 with jumbo
/// frames, and on loopback (dev clusters, the tests, co-located nodes) nearly 64 KiB.
/// Bigger packets mean fewer system calls, packets and ACKs per byte: on loopback
/// this cap (instead of a jumbo frame's) took factor-3 replication from 67 to 81 MB/s
/// in one run of scripts/bench-replication.sh. A probe above the interface's MTU
/// fails at once (Don't Fragment), so the search costs a few lost probes, not data.
const DATAGRAM_BYTES_MAX: u16 = 65507;
/// Socket buffers asked of the kernel (it caps them at net.core.[rw]mem_max).
const SOCKET_BUFFER_BYTES: libc::c_int = 8 * 1024 * 1024;

/// How a node's transport is set up.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Every peer's certificate must carry this as its subject O.
    pub cluster_id: String,
    /// This node's id; the node certificate's CN must be `strand-node-<node_id>`.
    pub node_id: u32,
    pub tls: TlsFiles,
    /// A connection with no packet from its peer for this long is lost.
    pub idle_timeout: Duration,
    /// Ping a quiet connection this often so it is neither idle nor silently dead.
    pub keep_alive: Duration,
    /// Bytes of frames queued for one peer and not yet handed to QUIC; a frame that
    /// would go over is dropped (and counted).
    pub queued_bytes_max: usize,
    /// Bytes of received frames waiting for [`Transport::recv`]. Past it the transport
    /// stops reading streams, and QUIC flow control holds the senders back.
    pub received_bytes_max: usize,
}

impl TransportConfig {
    /// The defaults: 3 s idle timeout, 500 ms keep-alive, 128 MiB queued per peer and
    /// 128 MiB received (two of the largest frames).
    pub fn new(cluster_id: impl Into<String>, node_id: u32, tls: TlsFiles) -> Self {
        TransportConfig {
            cluster_id: cluster_id.into(),
            node_id,
            tls,
            idle_timeout: Duration::from_secs(3),
            keep_alive: Duration::from_millis(500),
            queued_bytes_max: 128 * 1024 * 1024,
            received_bytes_max: 128 * 1024 * 1024,
        }
    }
}

/// One frame received from a peer.
#[derive(Debug)]
pub struct Incoming {
    /// The sender's node id, read from its verified certificate.
    pub from: u32,
    /// The stream key the sender used.
    pub stream: u64,
    /// The whole frame (header and body), in a 16-byte-aligned buffer: `decode` reads
    /// it zero-copy. Its header was parsed; the body is not checked yet.
    pub frame: FrameBuffer,
}

/// Counters since the transport was bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Frames wholly handed to a QUIC stream (a connection lost later may still lose them).
    pub frames_sent: u64,
    /// Frame bytes handed to QUIC streams.
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Frames refused by `send` (full queue, unreachable peer) or discarded from a queue
    /// when its connection was lost.
    pub frames_dropped: u64,
    /// Connections that failed the TLS handshake or our identity check, either way.
    pub handshake_failures: u64,
    /// The largest UDP payload any open connection sends now (path MTU discovery's
    /// current finding; 0 with no connection).
    pub datagram_bytes: u16,
}

/// The QUIC endpoint of one glommio executor: sends frames to peers and receives
/// theirs. Lives on the executor that bound it (`!Send`); share it as `Rc`.
///
/// Two tasks run on that executor until [`Transport::close`]: one reads datagrams,
/// one runs connection timers, writes queued frames into streams and sends packets.
pub struct Transport {
    shared: Rc<Shared>,
    tasks: RefCell<Vec<glommio::task::JoinHandle<()>>>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("local_addr", &self.shared.local_addr)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Loads the TLS files, binds a UDP socket on `addr` and spawns the transport's
    /// tasks on the current glommio executor (call it from inside one).
    pub fn bind(addr: SocketAddr, config: TransportConfig) -> Result<Rc<Transport>, QuicError> {
        let tls = tls::load(&config.tls, &config.cluster_id, config.node_id)?;
        let transport = quic_transport_config(&config, STREAMS_PER_CONNECTION_MAX)?;
        let server_crypto =
            QuicServerConfig::try_from(tls.server).map_err(|e| QuicError::TlsConfig {
                reason: e.to_string(),
            })?;
        let client_crypto =
            QuicClientConfig::try_from(tls.client).map_err(|e| QuicError::TlsConfig {
                reason: e.to_string(),
            })?;
        let mut server_config = quinn_proto::ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config.transport_config(transport);
        // Nodes do not move; a packet from a new address is not worth following.
        server_config.migration(false);
        let mut client_config = quinn_proto::ClientConfig::new(Arc::new(client_crypto));
        // We only write on our own connections: the peer may open no stream on them.
        client_config.transport_config(quic_transport_config(&config, 0)?);

        let socket = bind_socket(addr)?;
        let local_addr = socket.local_addr().map_err(|e| QuicError::Bind {
            addr,
            source: e.into(),
        })?;
        let allow_mtud = tune_socket(&socket, local_addr);
        let mut endpoint_config = EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(DATAGRAM_BYTES_MAX)
            .map_err(|e| QuicError::InvalidConfig {
                reason: e.to_string(),
            })?;
        let datagram_bytes_max = endpoint_config.get_max_udp_payload_size() as usize;
        let endpoint = Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server_config)),
            allow_mtud,
            None,
        );

        let shared = Rc::new(Shared {
            state: RefCell::new(State {
                endpoint,
                conns: HashMap::new(),
                core: Core {
                    client_config,
                    cluster_id: config.cluster_id,
                    queued_bytes_max: config.queued_bytes_max,
                    received_bytes_max: config.received_bytes_max,
                    peers: HashMap::new(),
                    inbox: VecDeque::new(),
                    inbox_bytes: 0,
                    reads_paused: false,
                    reads_resumed: false,
                    recv_waker: None,
                    stats: TransportStats::default(),
                    closing: false,
                },
            }),
            driver_wake: Signal::default(),
            receiver_stop: Signal::default(),
            local_addr,
        });
        let socket = Rc::new(socket);
        info!(
            "QUIC transport of node {} listening on {local_addr}",
            config.node_id
        );
        let receiver = glommio::spawn_local(receive_task(
            shared.clone(),
            socket.clone(),
            datagram_bytes_max,
        ))
        .detach();
        let driver = glommio::spawn_local(drive_task(shared.clone(), socket)).detach();
        Ok(Rc::new(Transport {
            shared,
            tasks: RefCell::new(vec![receiver, driver]),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Queues one frame (header and body, as made by `replication::encode`) for node
    /// `to` at `addr` on stream key `stream`. Never blocks.
    ///
    /// Connects on first use, and again after a loss once the backoff has passed
    /// (until then sends fail with [`SendError::Unreachable`]). Frames of one
    /// `(to, stream)` arrive in order, or not at all: a frame queued or in flight when
    /// the connection is lost is gone, and the caller retransmits on its own.
    /// Copies the frame once; [`Transport::send_buffer`] takes an encoded buffer as is.
    pub fn send(
        &self,
        to: u32,
        addr: SocketAddr,
        stream: u64,
        frame: &[u8],
    ) -> Result<(), SendError> {
        check_frame(frame)?;
        self.enqueue(to, addr, stream, frame.len(), || {
            Bytes::copy_from_slice(frame)
        })
    }

    /// [`Transport::send`] without the copy: the buffer `encode` returned becomes the
    /// stream data.
    pub fn send_buffer(
        &self,
        to: u32,
        addr: SocketAddr,
        stream: u64,
        frame: FrameBuffer,
    ) -> Result<(), SendError> {
        check_frame(&frame)?;
        let len = frame.len();
        self.enqueue(to, addr, stream, len, || Bytes::from_owner(frame))
    }

    fn enqueue(
        &self,
        to: u32,
        addr: SocketAddr,
        stream: u64,
        len: usize,
        frame: impl FnOnce() -> Bytes,
    ) -> Result<(), SendError> {
        let result =
            self.shared
                .state
                .borrow_mut()
                .enqueue(Instant::now(), to, addr, stream, len, frame);
        if result.is_ok() {
            self.shared.driver_wake.notify();
        }
        result
    }

    /// The next frame received from any peer, or `None` once the transport is closed
    /// (and the frames received before are taken). Meant for one receiving task.
    pub async fn recv(&self) -> Option<Incoming> {
        poll_fn(|cx| {
            let mut state = self.shared.state.borrow_mut();
            let polled = state.core.poll_recv(cx);
            if state.core.reads_resumed {
                self.shared.driver_wake.notify();
            }
            polled
        })
        .await
    }

    /// The peers we have an established outgoing connection to, by node id.
    pub fn connected_peers(&self) -> Vec<u32> {
        let state = self.shared.state.borrow();
        let mut peers: Vec<u32> = state
            .core
            .peers
            .iter()
            .filter(|(_, peer)| matches!(peer.link, Link::Connected(_)))
            .map(|(&id, _)| id)
            .collect();
        peers.sort_unstable();
        peers
    }

    pub fn stats(&self) -> TransportStats {
        let state = self.shared.state.borrow();
        TransportStats {
            datagram_bytes: state
                .conns
                .values()
                .map(|c| c.conn.current_mtu())
                .max()
                .unwrap_or(0),
            ..state.core.stats
        }
    }

    /// Closes every connection (peers are told, best effort), drops queued frames and
    /// stops the tasks; [`Transport::recv`] returns what was already received, then
    /// `None`. [`Transport::closed`] waits until the socket is released.
    pub fn close(&self) {
        let mut state = self.shared.state.borrow_mut();
        if state.core.closing {
            return;
        }
        state.close(Instant::now());
        drop(state);
        self.shared.driver_wake.notify();
    }

    /// Waits until the tasks have stopped after [`Transport::close`] (which this
    /// calls), so the address can be bound again.
    pub async fn closed(&self) {
        self.close();
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        for task in tasks {
            task.await;
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.close();
    }
}

fn check_frame(frame: &[u8]) -> Result<(), SendError> {
    let header = FrameHeader::parse(frame).map_err(SendError::InvalidFrame)?;
    if header.frame_bytes() != frame.len() {
        return Err(SendError::FrameLength {
            expected: header.frame_bytes(),
            got: frame.len(),
        });
    }
    Ok(())
}

/// `peer_streams`: how many unidirectional streams the peer may open at once.
fn quic_transport_config(
    config: &TransportConfig,
    peer_streams: u32,
) -> Result<Arc<quinn_proto::TransportConfig>, QuicError> {
    let idle =
        IdleTimeout::try_from(config.idle_timeout).map_err(|_| QuicError::InvalidConfig {
            reason: format!("idle_timeout {:?} is too long", config.idle_timeout),
        })?;
    if config.keep_alive.is_zero() || config.keep_alive >= config.idle_timeout {
        return Err(QuicError::InvalidConfig {
            reason: format!(
                "keep_alive {:?} must be above zero and below idle_timeout {:?}",
                config.keep_alive, config.idle_timeout
            ),
        });
    }
    let mut mtu_discovery = quinn_proto::MtuDiscoveryConfig::default();
    mtu_discovery.upper_bound(DATAGRAM_BYTES_MAX);
    let mut transport = quinn_proto::TransportConfig::default();
    transport
        .max_concurrent_uni_streams(VarInt::from_u32(peer_streams))
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW_BYTES))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW_BYTES))
        .send_window(u64::from(CONNECTION_WINDOW_BYTES))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.keep_alive))
        .mtu_discovery_config(Some(mtu_discovery))
        .datagram_receive_buffer_size(None)
        .enable_segmentation_offload(false);
    Ok(Arc::new(transport))
}

/// Binds without SO_REUSEPORT (which glommio's `UdpSocket::bind` sets): a second
/// socket on the port would get a share of our peers' datagrams, and connections live
/// in one endpoint. Each executor binds its own port.
fn bind_socket(addr: SocketAddr) -> Result<UdpSocket, QuicError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| QuicError::Bind { addr, source })?;
    // SAFETY: `into_raw_fd` hands over sole ownership of an open UDP socket, which the
    // glommio socket then owns and closes.
    Ok(unsafe { UdpSocket::from_raw_fd(socket.into_raw_fd()) })
}

/// Sets Don't Fragment (so path MTU discovery probes are dropped, not fragmented) and
/// larger socket buffers. Returns whether MTU discovery may be used.
fn tune_socket(socket: &UdpSocket, local: SocketAddr) -> bool {
    let fd = socket.as_raw_fd();
    for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        if let Err(e) = set_int_option(fd, libc::SOL_SOCKET, option, SOCKET_BUFFER_BYTES) {
            debug!("cannot enlarge the QUIC socket buffers: {e}");
        }
    }
    let dont_fragment = match local {
        SocketAddr::V4(_) => set_int_option(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        ),
        SocketAddr::V6(_) => set_int_option(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        ),
    };
    match dont_fragment {
        Ok(()) => true,
        Err(e) => {
            debug!("cannot set Don't Fragment on the QUIC socket, MTU discovery is off: {e}");
            false
        }
    }
}

fn set_int_option(
    fd: std::os::fd::RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller for the whole call; the
    // option value is a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What the public handle and the two tasks share.
struct Shared {
    state: RefCell<State>,
    /// Wakes the driver: frames queued, reads resumed, datagrams handled, closing.
    driver_wake: Signal,
    /// Tells the receive task to stop (the driver sends the last packets first).
    receiver_stop: Signal,
    local_addr: SocketAddr,
}

/// A wake-up flag for one waiting task.
#[derive(Default)]
struct Signal {
    set: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Signal {
    fn notify(&self) {
        self.set.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.set.replace(false) {
                return Poll::Ready(());
            }
            let mut waker = self.waker.borrow_mut();
            match &*waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
    }
}

struct State {
    endpoint: Endpoint,
    conns: HashMap<ConnectionHandle, Conn>,
    core: Core,
}

/// Everything but the endpoint and the connections, so a connection can be worked on
/// while peers, the inbox and the counters are updated.
struct Core {
    client_config: quinn_proto::ClientConfig,
    cluster_id: String,
    queued_bytes_max: usize,
    received_bytes_max: usize,
    /// Outgoing side, by node id.
    peers: HashMap<u32, Peer>,
    inbox: VecDeque<Incoming>,
    inbox_bytes: usize,
    /// Streams are not read while the inbox is over `received_bytes_max`.
    reads_paused: bool,
    /// The inbox drained after a pause: the driver reads every stream once.
    reads_resumed: bool,
    recv_waker: Option<Waker>,
    stats: TransportStats,
    closing: bool,
}

struct Conn {
    conn: Connection,
    side: Side,
}

enum Side {
    /// Ours, to `to`: we only write.
    Outgoing { to: u32, established: bool },
    /// A peer's: we only read, once its certificate passed [`check_identity`].
    Incoming {
        from: Option<u32>,
        refused: bool,
        streams: HashMap<StreamId, FrameReader>,
    },
}

/// Our outgoing side towards one node.
struct Peer {
    addr: SocketAddr,
    link: Link,
    /// The wait after the next failure.
    backoff: Duration,
    queued_bytes: usize,
    streams: HashMap<u64, OutStream>,
    /// Keys whose stream has frames to write.
    pending: Vec<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Idle,
    Connecting(ConnectionHandle),
    Connected(ConnectionHandle),
    Backoff { until: Instant },
}

impl Link {
    fn handle(self) -> Option<ConnectionHandle> {
        match self {
            Link::Connecting(ch) | Link::Connected(ch) => Some(ch),
            Link::Idle | Link::Backoff { .. } => None,
        }
    }
}

impl Peer {
    fn new(addr: SocketAddr) -> Self {
        Peer {
            addr,
            link: Link::Idle,
            backoff: RECONNECT_BACKOFF_MIN,
            queued_bytes: 0,
            streams: HashMap::new(),
            pending: Vec::new(),
        }
    }

    /// Drops every queued frame and forgets the streams of the connection; returns
    /// how many frames were dropped.
    fn reset_streams(&mut self) -> u64 {
        let dropped: usize = self.streams.values_mut().map(OutStream::reset).sum();
        self.pending.clear();
        self.queued_bytes = 0;
        dropped as u64
    }

    /// The connection is gone: drop the queue and wait before the next attempt.
    fn fail(&mut self, now: Instant) -> u64 {
        self.link = Link::Backoff {
            until: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(RECONNECT_BACKOFF_MAX);
        self.reset_streams()
    }
}

impl State {
    fn enqueue(
        &mut self,
        now: Instant,
        to: u32,
        addr: SocketAddr,
        stream: u64,
        len: usize,
        frame: impl FnOnce() -> Bytes,
    ) -> Result<(), SendError> {
        let State {
            endpoint,
            conns,
            core,
        } = self;
        if core.closing {
            return Err(SendError::Closed);
        }
        let peer = core.peers.entry(to).or_insert_with(|| Peer::new(addr));
        if peer.addr != addr {
            info!(
                "node {to} is now addressed at {addr} (was {}); reconnecting",
                peer.addr
            );
            if let Some(conn) = peer.link.handle().and_then(|ch| conns.get_mut(&ch)) {
                conn.conn.close(
                    now,
                    VarInt::from_u32(close_code::READDRESSED),
                    Bytes::from_static(b"readdressed"),
                );
            }
            core.stats.frames_dropped += peer.reset_streams();
            peer.link = Link::Idle;
            peer.backoff = RECONNECT_BACKOFF_MIN;
            peer.addr = addr;
        }
        let connect = match peer.link {
            Link::Backoff { until } if now < until => {
                core.stats.frames_dropped += 1;
                return Err(SendError::Unreachable {
                    to,
                    addr,
                    retry_in: until - now,
                });
            }
            Link::Idle | Link::Backoff { .. } => true,
            Link::Connecting(_) | Link::Connected(_) => false,
        };
        if connect {
            let name = tls::server_name(to);
            match endpoint.connect(now, core.client_config.clone(), addr, &name) {
                Ok((ch, conn)) => {
                    debug!("connecting to node {to} at {addr}");
                    conns.insert(
                        ch,
                        Conn {
                            conn,
                            side: Side::Outgoing {
                                to,
                                established: false,
                            },
                        },
                    );
                    peer.link = Link::Connecting(ch);
                }
                Err(e) => {
                    core.stats.frames_dropped += 1 + peer.fail(now);
                    return Err(SendError::Connect {
                        to,
                        addr,
                        reason: e.to_string(),
                    });
                }
            }
        }
        if peer.queued_bytes + len > core.queued_bytes_max {
            core.stats.frames_dropped += 1;
            return Err(SendError::QueueFull {
                to,
                queued_bytes: peer.queued_bytes,
                queued_bytes_max: core.queued_bytes_max,
            });
        }
        let out = peer.streams.entry(stream).or_default();
        out.frames.push_back(frame());
        if !out.pending {
            out.pending = true;
            peer.pending.push(stream);
        }
        peer.queued_bytes += len;
        Ok(())
    }

    /// Feeds one received datagram to the endpoint; returns a packet the endpoint
    /// answers with directly (written into `buf`), if any.
    fn handle_datagram(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        data: BytesMut,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        buf.clear();
        match self.endpoint.handle(now, remote, None, None, data, buf)? {
            DatagramEvent::ConnectionEvent(ch, event) => {
                if let Some(conn) = self.conns.get_mut(&ch) {
                    conn.conn.handle_event(event);
                }
                None
            }
            DatagramEvent::NewConnection(incoming) => {
                if self.core.closing || self.conns.len() >= CONNECTIONS_MAX {
                    debug!("refusing a connection from {remote}: closing or at the limit");
                    return Some(self.endpoint.refuse(incoming, buf));
                }
                match self.endpoint.accept(incoming, now, buf, None) {
                    Ok((ch, conn)) => {
                        debug!("accepting a connection from {remote}");
                        let side = Side::Incoming {
                            from: None,
                            refused: false,
                            streams: HashMap::new(),
                        };
                        self.conns.insert(ch, Conn { conn, side });
                        None
                    }
                    Err(e) => {
                        debug!("could not accept a connection from {remote}: {}", e.cause);
                        e.response
                    }
                }
            }
            DatagramEvent::Response(transmit) => Some(transmit),
        }
    }

    /// One pass over every connection: timers, endpoint events, application events,
    /// queued frames into streams, streams into the inbox; drained connections go.
    fn drive(&mut self, now: Instant) {
        let State {
            endpoint,
            conns,
            core,
        } = self;
        let resume_reads = std::mem::take(&mut core.reads_resumed);
        conns.retain(|&ch, conn| {
            if conn.conn.poll_timeout().is_some_and(|at| at <= now) {
                conn.conn.handle_timeout(now);
            }
            while let Some(event) = conn.conn.poll_endpoint_events() {
                if let Some(event) = endpoint.handle_event(ch, event) {
                    conn.conn.handle_event(event);
                }
            }
            while let Some(event) = conn.conn.poll() {
                core.on_event(ch, conn, event, now);
            }
            match conn.side {
                Side::Outgoing { .. } => core.flush(ch, conn, now),
                Side::Incoming { .. } if resume_reads => core.read_all(conn, now),
                Side::Incoming { .. } => {}
            }
            !conn.conn.is_drained()
        });
    }

    /// Writes the next datagram of connection `ch` into `buf`.
    fn poll_transmit(
        &mut self,
        ch: ConnectionHandle,
        now: Instant,
        buf: &mut Vec<u8>,
    ) -> Option<Transmit> {
        buf.clear();
        self.conns.get_mut(&ch)?.conn.poll_transmit(now, 1, buf)
    }

    fn next_timeout(&mut self) -> Option<Instant> {
        self.conns
            .values_mut()
            .filter_map(|conn| conn.conn.poll_timeout())
            .min()
    }

    fn close(&mut self, now: Instant) {
        self.core.closing = true;
        for conn in self.conns.values_mut() {
            conn.conn.close(
                now,
                VarInt::from_u32(close_code::SHUTDOWN),
                Bytes::from_static(b"node shutting down"),
            );
        }
        let mut dropped = 0;
        for peer in self.core.peers.values_mut() {
            dropped += peer.reset_streams();
            peer.link = Link::Idle;
        }
        self.core.stats.frames_dropped += dropped;
        if let Some(waker) = self.core.recv_waker.take() {
            waker.wake();
        }
    }
}

impl Core {
    fn on_event(&mut self, ch: ConnectionHandle, conn: &mut Conn, event: Event, now: Instant) {
        match event {
            Event::Connected => self.on_connected(ch, conn, now),
            Event::ConnectionLost { reason } => self.on_lost(ch, conn, &reason, now),
            Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => self.read_all(conn, now),
            Event::Stream(StreamEvent::Readable { id }) => self.read_one(conn, id, now),
            Event::Stream(StreamEvent::Stopped { id, error_code }) => {
                let Side::Outgoing { to, .. } = conn.side else {
                    return;
                };
                warn!(
                    "node {to} at {} stopped our stream {id} (code {error_code}); reconnecting",
                    conn.conn.remote_address()
                );
                conn.conn.close(
                    now,
                    VarInt::from_u32(close_code::STREAM_STOPPED),
                    Bytes::from_static(b"stream stopped"),
                );
                if let Some(peer) = self.peers.get_mut(&to) {
                    if peer.link.handle() == Some(ch) {
                        self.stats.frames_dropped += peer.fail(now);
                    }
                }
            }
            // Writable and Available need no handling: every drive pass flushes.
            _ => {}
        }
    }

    fn on_connected(&mut self, ch: ConnectionHandle, conn: &mut Conn, now: Instant) {
        let remote = conn.conn.remote_address();
        match &mut conn.side {
            Side::Outgoing { to, established } => {
                *established = true;
                // The backoff is reset only when a connection that worked ends: a
                // peer refusing our certificate does so after our side connected.
                if let Some(peer) = self.peers.get_mut(to) {
                    if peer.link == Link::Connecting(ch) {
                        peer.link = Link::Connected(ch);
                    }
                }
                info!("connected to node {to} at {remote}");
            }
            Side::Incoming { from, refused, .. } => {
                match check_identity_of(&conn.conn, &self.cluster_id) {
                    Ok(node_id) => {
                        *from = Some(node_id);
                        info!("accepted a connection from node {node_id} at {remote}");
                    }
                    Err(e) => {
                        *refused = true;
                        self.stats.handshake_failures += 1;
                        warn!("refused a connection from {remote}: {e}");
                        conn.conn.close(
                            now,
                            VarInt::from_u32(close_code::REFUSED),
                            Bytes::from(e.to_string()),
                        );
                        return;
                    }
                }
                // Streams may have opened with the handshake's last flight.
                self.read_all(conn, now);
            }
        }
    }

    fn on_lost(
        &mut self,
        ch: ConnectionHandle,
        conn: &Conn,
        reason: &ConnectionError,
        now: Instant,
    ) {
        let remote = conn.conn.remote_address();
        match &conn.side {
            Side::Outgoing { to, established } => {
                let refused = !established || is_refusal(reason);
                if let Some(peer) = self.peers.get_mut(to) {
                    if peer.link.handle() == Some(ch) {
                        if !refused {
                            peer.backoff = RECONNECT_BACKOFF_MIN;
                        }
                        self.stats.frames_dropped += peer.fail(now);
                    }
                }
                if refused {
                    self.stats.handshake_failures += 1;
                    warn!("could not connect to node {to} at {remote}: {reason}");
                } else {
                    warn!("lost the connection to node {to} at {remote}: {reason}");
                }
            }
            Side::Incoming { from, refused, .. } => match from {
                Some(from) => info!("the connection from node {from} at {remote} ended: {reason}"),
                None if *refused => {}
                None => {
                    self.stats.handshake_failures += 1;
                    match reason {
                        // Our TLS check of the peer's certificate failed.
                        ConnectionError::TransportError(_) => {
                            warn!("refused a connection from {remote}: {reason}")
                        }
                        _ => warn!("a connection from {remote} failed before the handshake finished: {reason}"),
                    }
                }
            },
        }
    }

    /// Writes queued frames of the peer of outgoing connection `ch` into its streams,
    /// as far as flow control lets them.
    fn flush(&mut self, ch: ConnectionHandle, conn: &mut Conn, now: Instant) {
        let Side::Outgoing { to, .. } = conn.side else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&to) else {
            return;
        };
        if peer.link != Link::Connected(ch) {
            return;
        }
        let mut i = 0;
        while i < peer.pending.len() {
            let key = peer.pending[i];
            let Some(out) = peer.streams.get_mut(&key) else {
                peer.pending.swap_remove(i);
                continue;
            };
            match write_stream(&mut conn.conn, key, out, &mut self.stats) {
                Ok(written) => {
                    peer.queued_bytes -= written;
                    if out.frames.is_empty() {
                        out.pending = false;
                        peer.pending.swap_remove(i);
                    } else {
                        i += 1;
                    }
                }
                Err(code) => {
                    warn!(
                        "node {to} at {} stopped our stream for key {key} (code {code}); reconnecting",
                        conn.conn.remote_address()
                    );
                    conn.conn.close(
                        now,
                        VarInt::from_u32(close_code::STREAM_STOPPED),
                        Bytes::from_static(b"stream stopped"),
                    );
                    self.stats.frames_dropped += peer.fail(now);
                    return;
                }
            }
        }
    }

    /// Accepts new streams of a verified incoming connection and reads all of them.
    fn read_all(&mut self, conn: &mut Conn, now: Instant) {
        let Side::Incoming {
            from: Some(_),
            refused: false,
            streams,
        } = &mut conn.side
        else {
            return;
        };
        while let Some(id) = conn.conn.streams().accept(Dir::Uni) {
            streams.insert(id, FrameReader::default());
        }
        // Collected first: reading needs the connection mutably. Only after a pause
        // or on new streams, so the allocation is rare.
        let ids: Vec<StreamId> = streams.keys().copied().collect();
        for id in ids {
            self.read_one(conn, id, now);
        }
    }

    fn read_one(&mut self, conn: &mut Conn, id: StreamId, now: Instant) {
        let Conn { conn, side } = conn;
        let Side::Incoming {
            from: Some(from),
            refused,
            streams,
        } = side
        else {
            return;
        };
        if *refused {
            return;
        }
        let from = *from;
        let Some(reader) = streams.get_mut(&id) else {
            return;
        };
        let mut recv = conn.recv_stream(id);
        let mut chunks = match recv.read(true) {
            Ok(chunks) => chunks,
            Err(_) => {
                streams.remove(&id);
                return;
            }
        };
        let outcome = loop {
            if self.inbox_bytes >= self.received_bytes_max {
                self.reads_paused = true;
                break Ok(true);
            }
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => {
                    let fed = reader.feed(&chunk.bytes, &mut |stream, frame| {
                        self.deliver(from, stream, frame)
                    });
                    if let Err(e) = fed {
                        break Err(e);
                    }
                }
                Ok(None) | Err(ReadError::Reset(_)) => break Ok(false),
                Err(ReadError::Blocked) => break Ok(true),
            }
        };
        // Returns flow-control credit; the packet goes out with the next transmit pass.
        let _ = chunks.finalize();
        if !self.inbox.is_empty() {
            if let Some(waker) = self.recv_waker.take() {
                waker.wake();
            }
        }
        match outcome {
            Ok(true) => {}
            Ok(false) => {
                streams.remove(&id);
            }
            Err(e) => {
                warn!(
                    "closing the connection from node {from} at {}: stream key {:?} carries bytes that are not a frame: {e}",
                    conn.remote_address(),
                    reader.key()
                );
                *refused = true;
                conn.close(
                    now,
                    VarInt::from_u32(close_code::BAD_FRAME),
                    Bytes::from_static(b"bad frame"),
                );
            }
        }
    }

    fn deliver(&mut self, from: u32, stream: u64, frame: FrameBuffer) {
        self.stats.frames_received += 1;
        self.stats.bytes_received += frame.len() as u64;
        self.inbox_bytes += frame.len();
        self.inbox.push_back(Incoming {
            from,
            stream,
            frame,
        });
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        if let Some(incoming) = self.inbox.pop_front() {
            self.inbox_bytes -= incoming.frame.len();
            if self.reads_paused && self.inbox_bytes < self.received_bytes_max / 2 {
                self.reads_paused = false;
                self.reads_resumed = true;
            }
            return Poll::Ready(Some(incoming));
        }
        if self.closing {
            return Poll::Ready(None);
        }
        self.recv_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Writes the key prefix (on a new stream) and as many queued frames as QUIC takes;
/// returns the frame bytes written, or the peer's error code if it stopped the stream.
fn write_stream(
    conn: &mut Connection,
    key: u64,
    out: &mut OutStream,
    stats: &mut TransportStats,
) -> Result<usize, VarInt> {
    let id = match out.id {
        Some(id) => id,
        None => match conn.streams().open(Dir::Uni) {
            Some(id) => {
                out.id = Some(id);
                out.prefix_left = STREAM_KEY_BYTES;
                id
            }
            // At the peer's stream limit; `Available` comes, and the next pass retries.
            None => return Ok(0),
        },
    };
    let mut stream = conn.send_stream(id);
    let stopped = |e: WriteError| match e {
        WriteError::Stopped(code) => Some(code),
        WriteError::ClosedStream => Some(VarInt::from_u32(0)),
        WriteError::Blocked => None,
    };
    while out.prefix_left > 0 {
        let prefix = key.to_le_bytes();
        match stream.write(&prefix[STREAM_KEY_BYTES - out.prefix_left..]) {
            Ok(n) => out.prefix_left -= n,
            Err(e) => return stopped(e).map_or(Ok(0), Err),
        }
    }
    match stream.write_chunks(out.frames.make_contiguous()) {
        Ok(written) => {
            // Whole chunks were taken (left empty); a partial one was advanced in place.
            out.frames.drain(..written.chunks);
            stats.frames_sent += written.chunks as u64;
            stats.bytes_sent += written.bytes as u64;
            Ok(written.bytes)
        }
        Err(e) => stopped(e).map_or(Ok(0), Err),
    }
}

/// The node id of a verified incoming connection's client certificate, if it is a
/// node of `cluster_id`.
fn check_identity_of(conn: &Connection, cluster_id: &str) -> Result<u32, IdentityError> {
    let certs = conn
        .crypto_session()
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(IdentityError::NoCertificate)?;
    let end_entity = certs.first().ok_or(IdentityError::NoCertificate)?;
    Ok(check_identity(end_entity, cluster_id, None)?.node_id)
}

/// Whether a connection the peer ended after our side finished the handshake was in
/// fact refused: its TLS check of our certificate failed (a TLS alert), or our
/// identity did not pass its check.
fn is_refusal(reason: &ConnectionError) -> bool {
    const TLS_ALERTS: std::ops::RangeInclusive<u64> = 0x100..=0x1ff;
    match reason {
        ConnectionError::ConnectionClosed(close) => {
            TLS_ALERTS.contains(&u64::from(close.error_code))
        }
        ConnectionError::TransportError(e) => TLS_ALERTS.contains(&u64::from(e.code)),
        ConnectionError::ApplicationClosed(close) => {
            close.error_code == VarInt::from_u32(close_code::REFUSED)
        }
        _ => false,
    }
}

/// Reads datagrams and feeds them to the endpoint until told to stop.
async fn receive_task(shared: Rc<Shared>, socket: Rc<UdpSocket>, datagram_bytes_max: usize) {
    let mut pool = BytesMut::new();
    let mut response = Vec::new();
    let mut burst = 0;
    loop {
        if pool.capacity() < datagram_bytes_max {
            pool = BytesMut::with_capacity(RECV_POOL_BYTES.max(datagram_bytes_max));
        }
        // Only the bytes the last datagram used are zeroed again.
        pool.resize(datagram_bytes_max, 0);
        let received = futures_lite::future::or(
            async { Some(socket.recv_from(&mut pool[..]).await) },
            async {
                shared.receiver_stop.wait().await;
                None
            },
        )
        .await;
        let (len, remote) = match received {
            None => break,
            Some(Ok(received)) => received,
            Some(Err(e)) => {
                debug!("QUIC socket receive error: {e}");
                futures_lite::future::yield_now().await;
                continue;
            }
        };
        let datagram = pool.split_to(len);
        let answer = shared.state.borrow_mut().handle_datagram(
            Instant::now(),
            remote,
            datagram,
            &mut response,
        );
        if let Some(transmit) = answer {
            send_datagram(&socket, &response[..transmit.size], transmit.destination).await;
        }
        shared.driver_wake.notify();
        burst += 1;
        if burst == RECV_BURST_DATAGRAMS {
            burst = 0;
            futures_lite::future::yield_now().await;
        }
    }
}

/// Runs timers and stream I/O and sends what the connections have to send, until
/// the transport closes.
async fn drive_task(shared: Rc<Shared>, socket: Rc<UdpSocket>) {
    let mut buf = Vec::new();
    let mut handles = Vec::new();
    loop {
        let now = Instant::now();
        shared.state.borrow_mut().drive(now);
        let sent = transmit(&shared, &socket, &mut handles, &mut buf, now).await;
        if shared.state.borrow().core.closing {
            break;
        }
        if sent > 0 {
            // Sending changes timers and may free flow-control credit: look again.
            futures_lite::future::yield_now().await;
            continue;
        }
        let deadline = shared.state.borrow_mut().next_timeout();
        match deadline {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    // Due already; still let the receive task have its turn.
                    futures_lite::future::yield_now().await;
                } else {
                    futures_lite::future::or(
                        shared.driver_wake.wait(),
                        glommio::timer::sleep(wait),
                    )
                    .await;
                }
            }
            None => shared.driver_wake.wait().await,
        }
    }
    shared.receiver_stop.notify();
}

/// Sends what every connection has to send, a burst per connection at a time;
/// returns the datagrams sent.
async fn transmit(
    shared: &Shared,
    socket: &UdpSocket,
    handles: &mut Vec<ConnectionHandle>,
    buf: &mut Vec<u8>,
    now: Instant,
) -> usize {
    handles.clear();
    handles.extend(shared.state.borrow().conns.keys().copied());
    let mut sent = 0;
    for &ch in handles.iter() {
        for _ in 0..SEND_BURST_DATAGRAMS {
            let transmit = shared.state.borrow_mut().poll_transmit(ch, now, buf);
            let Some(transmit) = transmit else {
                break;
            };
            send_datagram(socket, &buf[..transmit.size], transmit.destination).await;
            sent += 1;
        }
    }
    sent
}

async fn send_datagram(socket: &UdpSocket, datagram: &[u8], to: SocketAddr) {
    // A lost datagram is QUIC's to recover; EMSGSIZE is an MTU probe too big for the
    // path, which is how discovery learns the limit.
    if let Err(e) = socket.send_to(datagram, to).await {
        debug!(
            "QUIC datagram of {} bytes to {to} not sent: {e}",
            datagram.len()
        );
    }
}
