//! A small blocking Kafka client: one TCP connection, one request in flight.
//!
//! It speaks the Kafka wire protocol to any Kafka-compatible broker, so the admin CLI
//! can be checked against real Kafka as well as against Strand. The frame codec
//! (`encode_request`, `frame_body_bytes`, `decode_response`) is plain functions over
//! buffers; only `Client` touches the socket.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use crate::errors::error_name;

/// Connect, read and write timeout of every socket operation.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a broker may take for a topic operation before it answers REQUEST_TIMED_OUT.
/// Kept below `IO_TIMEOUT` so that the broker's answer arrives before we give up.
pub const OPERATION_TIMEOUT_MS: i32 = 8_000;

/// Largest response frame we accept; a bigger size prefix means a broken stream.
pub const RESPONSE_FRAME_BYTES_MAX: usize = 100 * 1024 * 1024;

/// The size prefix of every frame: an i32, big-endian.
const FRAME_PREFIX_BYTES: usize = 4;

const CLIENT_ID: &str = "strand-cli";

/// ApiVersions v0 is understood by every broker, so it is the first request we send.
const API_VERSIONS_VERSION: i16 = 0;

/// The versions of each API this client builds requests for and can read responses of.
/// Lower bounds: Metadata v1 is the first with "null topics = all topics"; the others are
/// the oldest versions kafka-protocol still encodes.
pub const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::CreatePartitions, 0, 3),
    // v1 adds the election type (0 = preferred, what `cluster elect-leaders` asks).
    (ApiKey::ElectLeaders, 1, 2),
    // The `group` commands. FindCoordinator v4+ batches the keys (`coordinator_keys`);
    // ListGroups v4+ gives the state; OffsetFetch from v2, the first where null topics
    // means "every committed offset" (v8+ moves the group into a `groups` array).
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::OffsetFetch, 2, 9),
    (ApiKey::DeleteGroups, 0, 2),
];

/// The range of versions this client uses for `key`, if it uses the API at all.
pub fn client_versions(key: ApiKey) -> Option<(i16, i16)> {
    CLIENT_VERSIONS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

/// The highest version both sides support, or `None` if the ranges do not meet.
pub fn pick_version(client: (i16, i16), broker: (i16, i16)) -> Option<i16> {
    let min = client.0.max(broker.0);
    let max = client.1.min(broker.1);
    (min <= max).then_some(max)
}

/// Encodes one request frame: size prefix, request header, body.
pub fn encode_request<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &R,
) -> Result<BytesMut> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let mut frame = BytesMut::new();
    frame.put_i32(0); // Patched below, once the size is known.
    header
        .encode(&mut frame, api_key.request_header_version(version))
        .with_context(|| format!("cannot encode the {api_key:?} v{version} request header"))?;
    body.encode(&mut frame, version)
        .with_context(|| format!("cannot encode the {api_key:?} v{version} request"))?;
    let body_bytes = i32::try_from(frame.len() - FRAME_PREFIX_BYTES)
        .map_err(|_| anyhow!("the {api_key:?} request is too large to send"))?;
    frame[..FRAME_PREFIX_BYTES].copy_from_slice(&body_bytes.to_be_bytes());
    Ok(frame)
}

/// Reads a response frame's size prefix and checks it against our limit.
pub fn frame_body_bytes(prefix: [u8; FRAME_PREFIX_BYTES]) -> Result<usize> {
    let size = i32::from_be_bytes(prefix);
    let size = usize::try_from(size).map_err(|_| anyhow!("negative frame size {size}"))?;
    if size > RESPONSE_FRAME_BYTES_MAX {
        bail!("frame of {size} bytes is over the {RESPONSE_FRAME_BYTES_MAX}-byte limit");
    }
    Ok(size)
}

/// Decodes a response frame body (without its size prefix): header, then the message.
pub fn decode_response<R: Decodable>(
    api_key: ApiKey,
    version: i16,
    mut body: Bytes,
) -> Result<(ResponseHeader, R)> {
    let header = ResponseHeader::decode(&mut body, api_key.response_header_version(version))
        .with_context(|| format!("cannot decode the {api_key:?} v{version} response header"))?;
    let response = R::decode(&mut body, version)
        .with_context(|| format!("cannot decode the {api_key:?} v{version} response"))?;
    Ok((header, response))
}

/// One connection to one broker, with the API versions it advertised.
#[derive(Debug)]
pub struct Client {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
    /// api key → (min, max) as advertised by the broker.
    broker_versions: HashMap<i16, (i16, i16)>,
}

impl Client {
    /// Connects to the first reachable address of a comma-separated `HOST:PORT` list and
    /// asks the broker which API versions it supports.
    pub fn connect(bootstrap: &str) -> Result<Self> {
        let mut failures = Vec::new();
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match open_stream(addr) {
                Ok(stream) => return Self::handshake(addr.to_owned(), stream),
                Err(err) => failures.push((addr, err)),
            }
        }
        match failures.as_slice() {
            [] => bail!("no broker address given (expected HOST:PORT)"),
            [(addr, err)] => bail!("cannot reach Kafka at {addr}: {err}"),
            _ => {
                let all: Vec<String> = failures.iter().map(|(a, e)| format!("{a}: {e}")).collect();
                bail!("cannot reach Kafka at {bootstrap}: {}", all.join("; "))
            }
        }
    }

    fn handshake(addr: String, stream: TcpStream) -> Result<Self> {
        let mut client = Self {
            addr,
            stream,
            correlation_id: 0,
            broker_versions: HashMap::new(),
        };
        let response: ApiVersionsResponse =
            client.send(&ApiVersionsRequest::default(), API_VERSIONS_VERSION)?;
        if response.error_code != 0 {
            bail!(
                "broker at {} refused ApiVersions: {}",
                client.addr,
                error_name(response.error_code)
            );
        }
        client.broker_versions = response
            .api_keys
            .iter()
            .map(|v| (v.api_key, (v.min_version, v.max_version)))
            .collect();
        Ok(client)
    }

    /// The address this client is connected to, as it was given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version of `key` to use with this broker: the highest both sides support.
    pub fn version(&self, key: ApiKey) -> Result<i16> {
        let ours = client_versions(key)
            .ok_or_else(|| anyhow!("this client has no support for {key:?}"))?;
        let Some(&theirs) = self.broker_versions.get(&(key as i16)) else {
            bail!("the broker at {} does not support {key:?}", self.addr);
        };
        pick_version(ours, theirs).ok_or_else(|| {
            anyhow!(
                "the broker at {} supports {key:?} v{}..=v{}, this client v{}..=v{}",
                self.addr,
                theirs.0,
                theirs.1,
                ours.0,
                ours.1
            )
        })
    }

    /// Sends `request` at `version` and waits for its response.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        let api_key =
            ApiKey::try_from(R::KEY).map_err(|()| anyhow!("unknown API key {}", R::KEY))?;
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = encode_request(api_key, version, correlation_id, request)?;
        self.stream
            .write_all(&frame)
            .map_err(|err| self.io_error(api_key, version, err))?;
        let mut prefix = [0u8; FRAME_PREFIX_BYTES];
        self.stream
            .read_exact(&mut prefix)
            .map_err(|err| self.io_error(api_key, version, err))?;
        let size = frame_body_bytes(prefix)
            .with_context(|| format!("bad {api_key:?} response from {}", self.addr))?;
        let mut body = vec![0u8; size];
        self.stream
            .read_exact(&mut body)
            .map_err(|err| self.io_error(api_key, version, err))?;
        let (header, response) = decode_response::<R::Response>(api_key, version, body.into())
            .with_context(|| format!("bad response from {}", self.addr))?;
        if header.correlation_id != correlation_id {
            bail!(
                "response from {} answers request {}, expected {correlation_id}",
                self.addr,
                header.correlation_id
            );
        }
        Ok(response)
    }

    fn io_error(&self, api_key: ApiKey, version: i16, err: io::Error) -> anyhow::Error {
        let addr = &self.addr;
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => anyhow!(
                "no {api_key:?} response from {addr} within {} s",
                IO_TIMEOUT.as_secs()
            ),
            // Kafka closes the connection on a request it cannot parse.
            io::ErrorKind::UnexpectedEof => anyhow!(
                "{addr} closed the connection during a {api_key:?} v{version} request \
                 (it may not support this version)"
            ),
            _ => anyhow!("connection to {addr} failed during a {api_key:?} request: {err}"),
        }
    }
}

fn open_stream(addr: &str) -> io::Result<TcpStream> {
    let mut last_err = None;
    for sock_addr in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sock_addr, IO_TIMEOUT) {
            Ok(stream) => {
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                // Requests are small and sent whole; do not hold them back.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address")
    }))
}

/// Splits a frame made by `encode_request` back into header and body, as a broker would.
#[cfg(test)]
pub fn decode_request<R: Decodable>(frame: &[u8]) -> (RequestHeader, R) {
    let prefix: [u8; 4] = frame[..4].try_into().expect("frame has a size prefix");
    let size = frame_body_bytes(prefix).expect("size prefix within limits");
    assert_eq!(
        size,
        frame.len() - 4,
        "size prefix counts the rest of the frame"
    );
    let mut body = Bytes::copy_from_slice(&frame[4..]);
    let header = kafka_protocol::protocol::decode_request_header_from_buffer(&mut body)
        .expect("request header");
    let request = R::decode(&mut body, header.request_api_version).expect("request body");
    assert!(
        body.is_empty(),
        "{} bytes left after the request",
        body.len()
    );
    (header, request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_broker::FakeBroker;
    use kafka_protocol::messages::RequestKind;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
    use std::net::TcpListener;

    fn encode_response<R: Encodable>(api_key: ApiKey, version: i16, id: i32, body: &R) -> Bytes {
        let mut buf = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(id)
            .encode(&mut buf, api_key.response_header_version(version))
            .expect("response header");
        body.encode(&mut buf, version).expect("response body");
        buf.freeze()
    }

    #[test]
    fn request_frame_round_trips_at_every_metadata_version() {
        for version in 1..=12 {
            let request = MetadataRequest::default().with_topics(None);
            let frame = encode_request(ApiKey::Metadata, version, 42, &request).expect("encode");
            let (header, decoded) = decode_request::<MetadataRequest>(&frame);
            assert_eq!(header.request_api_key, ApiKey::Metadata as i16);
            assert_eq!(header.request_api_version, version);
            assert_eq!(header.correlation_id, 42);
            assert_eq!(header.client_id.as_deref(), Some(CLIENT_ID));
            assert_eq!(decoded, request);
        }
    }

    #[test]
    fn response_frame_round_trips_with_flexible_and_old_headers() {
        for version in [1, 8, 9, 12] {
            let response = MetadataResponse::default().with_cluster_id(if version >= 2 {
                Some(StrBytes::from_static_str("c1"))
            } else {
                None
            });
            let body = encode_response(ApiKey::Metadata, version, 7, &response);
            let (header, decoded) =
                decode_response::<MetadataResponse>(ApiKey::Metadata, version, body)
                    .expect("decode");
            assert_eq!(header.correlation_id, 7);
            assert_eq!(decoded, response);
        }
    }

    #[test]
    fn truncated_response_is_an_error_not_a_panic() {
        let body = encode_response(ApiKey::Metadata, 9, 7, &MetadataResponse::default());
        for cut in 0..body.len() {
            let result =
                decode_response::<MetadataResponse>(ApiKey::Metadata, 9, body.slice(..cut));
            assert!(
                result.is_err(),
                "decoding {cut} of {} bytes succeeded",
                body.len()
            );
        }
    }

    #[test]
    fn frame_size_prefix_is_checked() {
        assert_eq!(frame_body_bytes(16i32.to_be_bytes()).expect("16"), 16);
        assert!(frame_body_bytes((-1i32).to_be_bytes()).is_err());
        let too_big = i32::try_from(RESPONSE_FRAME_BYTES_MAX + 1).expect("fits");
        assert!(frame_body_bytes(too_big.to_be_bytes()).is_err());
    }

    #[test]
    fn version_is_the_highest_both_sides_support() {
        assert_eq!(pick_version((1, 12), (0, 13)), Some(12));
        assert_eq!(pick_version((1, 12), (0, 9)), Some(9));
        assert_eq!(pick_version((2, 7), (0, 1)), None);
        assert_eq!(pick_version((1, 4), (4, 4)), Some(4));
    }

    #[test]
    fn client_versions_are_within_what_kafka_protocol_encodes() {
        for &(key, min, max) in CLIENT_VERSIONS {
            let lib = key.valid_versions();
            assert!(min <= max, "{key:?}");
            assert!(
                lib.min <= min && max <= lib.max,
                "{key:?} {min}..={max} vs {lib}"
            );
        }
    }

    #[test]
    fn unreachable_broker_gives_a_clear_error() {
        // Bind then drop a listener so the port is (very likely) closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("ephemeral port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let err = Client::connect(&addr).expect_err("nothing listens there");
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!("cannot reach Kafka at {addr}: ")),
            "{text}"
        );
        let err = Client::connect("no-port-here").expect_err("no port");
        assert!(format!("{err:#}").starts_with("cannot reach Kafka at no-port-here: "));
    }

    #[test]
    fn client_negotiates_versions_and_matches_correlation_ids() {
        let broker = FakeBroker::start(&[(ApiKey::Metadata, 0, 9)], |request| {
            assert!(matches!(request, RequestKind::Metadata(_)), "{request:?}");
            MetadataResponse::default().into()
        });
        let mut client = Client::connect(&broker.addr).expect("connect");
        assert_eq!(client.version(ApiKey::Metadata).expect("metadata"), 9);
        let err = client
            .version(ApiKey::CreateTopics)
            .expect_err("not advertised");
        assert!(
            err.to_string().contains("does not support CreateTopics"),
            "{err}"
        );
        for _ in 0..3 {
            let response = client
                .send(&MetadataRequest::default().with_topics(None), 9)
                .expect("metadata response");
            assert_eq!(response, MetadataResponse::default());
        }
        drop(client);
        let received = broker.finish();
        assert_eq!(received.len(), 3);
        assert!(received.iter().all(|(version, _)| *version == 9));
    }

    #[test]
    fn a_version_range_that_does_not_meet_is_reported() {
        let broker = FakeBroker::start(&[(ApiKey::CreateTopics, 0, 1)], |request| {
            panic!("unexpected {request:?}")
        });
        let client = Client::connect(&broker.addr).expect("connect");
        let err = client
            .version(ApiKey::CreateTopics)
            .expect_err("0..=1 vs 2..=7");
        assert!(
            err.to_string()
                .contains("supports CreateTopics v0..=v1, this client v2..=v7"),
            "{err}"
        );
        drop(client);
        assert!(broker.finish().is_empty());
    }
}
