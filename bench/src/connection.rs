//! One TCP connection to a broker, split into a writing half and a reading half so
//! that requests can be pipelined: the producer thread writes, a reader thread reads
//! the responses in order. The frame codec is the admin CLI's (`strand_tools::client`).

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::BufMut;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strand_tools::client::{decode_response, frame_body_bytes, pick_version};
use strand_tools::errors::error_name;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a response may take. Produce requests carry a 30 s timeout of their own;
/// this is longer, so the broker's answer comes first.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(45);

/// Opens a connection and learns the broker's API versions.
#[derive(Debug)]
pub struct Connection {
    addr: String,
    stream: TcpStream,
    versions: HashMap<i16, (i16, i16)>,
}

impl Connection {
    pub fn open(addr: &str) -> Result<Self> {
        let stream = connect(addr).map_err(|e| {
            anyhow!(
                "cannot reach Kafka at {addr}: {e} (is a broker running there? \
                 `strand-bench --embedded` starts one)"
            )
        })?;
        let mut conn = Self {
            addr: addr.to_owned(),
            stream,
            versions: HashMap::new(),
        };
        let response: ApiVersionsResponse =
            conn.call(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default())?;
        if response.error_code != 0 {
            bail!(
                "{addr} refused ApiVersions: {}",
                error_name(response.error_code)
            );
        }
        conn.versions = response
            .api_keys
            .iter()
            .map(|v| (v.api_key, (v.min_version, v.max_version)))
            .collect();
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The highest version of `key` both this client (`ours`) and the broker support.
    pub fn version(&self, key: ApiKey, ours: (i16, i16)) -> Result<i16> {
        let theirs = self
            .versions
            .get(&(key as i16))
            .ok_or_else(|| anyhow!("the broker at {} does not support {key:?}", self.addr))?;
        pick_version(ours, *theirs).ok_or_else(|| {
            anyhow!(
                "the broker at {} supports {key:?} v{}..=v{}, strand-bench v{}..=v{}",
                self.addr,
                theirs.0,
                theirs.1,
                ours.0,
                ours.1
            )
        })
    }

    /// One request, one response (used before the connection is split).
    pub fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp> {
        let frame = encode_sized(key, version, 1, request)?;
        self.stream
            .write_all(&frame)
            .map_err(|e| io_error(&self.addr, key, e))?;
        let body = read_frame(&mut self.stream).map_err(|e| io_error(&self.addr, key, e))?;
        let (_, response) = decode_response(key, version, body.into())
            .with_context(|| format!("bad {key:?} response from {}", self.addr))?;
        Ok(response)
    }

    pub fn split(self) -> Result<(Writer, Reader)> {
        let read = self
            .stream
            .try_clone()
            .with_context(|| format!("cannot split the connection to {}", self.addr))?;
        Ok((
            Writer {
                addr: self.addr.clone(),
                stream: self.stream,
                correlation_id: 1,
            },
            Reader {
                addr: self.addr,
                stream: BufReader::with_capacity(256 * 1024, read),
            },
        ))
    }
}

/// Something holding a broker socket, which a stopping run may need to close from
/// another thread.
pub trait AsSocket {
    /// A second handle on the socket (`None` if the kernel refuses one).
    fn socket_clone(&self) -> Option<TcpStream>;
}

impl AsSocket for Connection {
    fn socket_clone(&self) -> Option<TcpStream> {
        self.stream.try_clone().ok()
    }
}

impl AsSocket for Writer {
    fn socket_clone(&self) -> Option<TcpStream> {
        self.stream.try_clone().ok()
    }
}

/// The writing half.
#[derive(Debug)]
pub struct Writer {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
}

impl Writer {
    /// Encodes and writes one request; returns its correlation id.
    pub fn send<Req: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<i32> {
        let correlation_id = self.next_correlation_id();
        self.send_as(key, version, correlation_id, request)?;
        Ok(correlation_id)
    }

    /// The id the next request will carry (for callers that must record it first).
    pub fn next_correlation_id(&mut self) -> i32 {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        self.correlation_id
    }

    /// Writes one request under an id from `next_correlation_id`.
    pub fn send_as<Req: Encodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        correlation_id: i32,
        request: &Req,
    ) -> Result<()> {
        let frame = encode_sized(key, version, correlation_id, request)?;
        self.stream
            .write_all(&frame)
            .map_err(|e| io_error(&self.addr, key, e))
    }

    /// Closes both halves: a reader blocked on this connection wakes with an error.
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The reading half.
#[derive(Debug)]
pub struct Reader {
    addr: String,
    stream: BufReader<TcpStream>,
}

impl Reader {
    /// Reads the next response, which must answer `correlation_id`.
    pub fn recv<Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        correlation_id: i32,
    ) -> Result<Resp> {
        let body = read_frame(&mut self.stream).map_err(|e| io_error(&self.addr, key, e))?;
        let (header, response) = decode_response(key, version, body.into())
            .with_context(|| format!("bad {key:?} response from {}", self.addr))?;
        if header.correlation_id != correlation_id {
            bail!(
                "{} answered request {} when {correlation_id} was next: the stream is out \
                 of step",
                self.addr,
                header.correlation_id
            );
        }
        Ok(response)
    }
}

/// Like `encode_request`, into a buffer sized up front: a produce request is as large
/// as its batches, and growing the buffer by doubling would copy them again.
fn encode_sized<Req: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &Req,
) -> Result<bytes::BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let header_version = key.request_header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + request.compute_size(version)?))
        .with_context(|| format!("cannot size the {key:?} v{version} request"))?;
    let prefix = i32::try_from(size)
        .map_err(|_| anyhow!("the {key:?} request ({size} bytes) is too large to send"))?;
    let mut frame = bytes::BytesMut::with_capacity(4 + size);
    frame.put_i32(prefix);
    header
        .encode(&mut frame, header_version)
        .and_then(|()| request.encode(&mut frame, version))
        .with_context(|| format!("cannot encode the {key:?} v{version} request"))?;
    debug_assert_eq!(frame.len(), 4 + size, "compute_size disagrees with encode");
    Ok(frame)
}

/// The client id strand-bench's requests carry.
const CLIENT_ID: &str = "strand-bench";

fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix)?;
    let size = frame_body_bytes(prefix)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut body = vec![0u8; size];
    stream.read_exact(&mut body)?;
    Ok(body)
}

fn io_error(addr: &str, key: ApiKey, err: io::Error) -> anyhow::Error {
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => anyhow!(
            "no {key:?} response from {addr} within {} s",
            RESPONSE_TIMEOUT.as_secs()
        ),
        io::ErrorKind::UnexpectedEof => {
            anyhow!("{addr} closed the connection during a {key:?} request")
        }
        _ => anyhow!("connection to {addr} failed during a {key:?} request: {err}"),
    }
}

fn connect(addr: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for sock in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sock, CONNECT_TIMEOUT) {
            Ok(stream) => {
                stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
                stream.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
}
