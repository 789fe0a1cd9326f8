//! A scripted broker on a local TCP port, for testing whole commands without Kafka.
//!
//! It serves one connection: ApiVersions from its version table, every other request
//! through the test's handler. Each request is decoded with kafka-protocol's broker-side
//! decoder, so a request the real client encodes wrongly fails here too.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, ListOffsetsRequest, ListOffsetsResponse, RequestKind,
    ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};

use crate::client::frame_body_bytes;
use crate::topic::{TIMESTAMP_EARLIEST, TIMESTAMP_LATEST};

/// Every request the broker received after ApiVersions, with its version.
pub type Received = Arc<Mutex<Vec<(i16, RequestKind)>>>;

#[derive(Debug)]
pub struct FakeBroker {
    pub addr: String,
    pub received: Received,
    thread: Option<JoinHandle<()>>,
}

impl FakeBroker {
    /// Starts a broker advertising `versions` and answering with `handler`.
    pub fn start<H>(versions: &[(ApiKey, i16, i16)], handler: H) -> Self
    where
        H: FnMut(&RequestKind) -> ResponseKind + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
        let addr = listener.local_addr().expect("local address").to_string();
        let api_keys: Vec<ApiVersion> = versions
            .iter()
            .map(|&(key, min, max)| {
                ApiVersion::default()
                    .with_api_key(key as i16)
                    .with_min_version(min)
                    .with_max_version(max)
            })
            .collect();
        let received = Received::default();
        let log = Arc::clone(&received);
        let thread = std::thread::spawn(move || {
            let (conn, _) = listener.accept().expect("accept");
            serve(conn, api_keys, handler, &log);
        });
        Self {
            addr,
            received,
            thread: Some(thread),
        }
    }

    /// Waits for the connection to close, then returns what was received.
    pub fn finish(mut self) -> Vec<(i16, RequestKind)> {
        if let Some(thread) = self.thread.take() {
            thread.join().expect("fake broker thread");
        }
        std::mem::take(&mut *self.received.lock().expect("lock"))
    }
}

fn serve<H>(
    mut conn: std::net::TcpStream,
    api_keys: Vec<ApiVersion>,
    mut handler: H,
    log: &Received,
) where
    H: FnMut(&RequestKind) -> ResponseKind,
{
    loop {
        let mut prefix = [0u8; 4];
        if conn.read_exact(&mut prefix).is_err() {
            return; // The client hung up.
        }
        let mut body = vec![0u8; frame_body_bytes(prefix).expect("frame size")];
        conn.read_exact(&mut body).expect("frame body");
        let mut body = Bytes::from(body);
        let header = decode_request_header_from_buffer(&mut body).expect("request header");
        let key = ApiKey::try_from(header.request_api_key).expect("known api key");
        let version = header.request_api_version;
        let response: ResponseKind = if key == ApiKey::ApiVersions {
            ApiVersionsResponse::default()
                .with_api_keys(api_keys.clone())
                .into()
        } else {
            let request = RequestKind::decode(key, &mut body, version)
                .unwrap_or_else(|e| panic!("undecodable {key:?} v{version}: {e:#}"));
            assert!(body.is_empty(), "{key:?} v{version}: bytes left over");
            let response = handler(&request);
            log.lock().expect("lock").push((version, request));
            response
        };
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(header.correlation_id)
            .encode(&mut out, key.response_header_version(version))
            .expect("response header");
        response.encode(&mut out, version).expect("response body");
        let size = i32::try_from(out.len()).expect("small response");
        conn.write_all(&size.to_be_bytes()).expect("write");
        conn.write_all(&out).expect("write");
    }
}

/// Log start 5 and high watermark 40 + partition id, for every partition asked about.
pub fn offsets_response(request: &ListOffsetsRequest) -> ResponseKind {
    let topics = request
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let offset = match p.timestamp {
                        TIMESTAMP_EARLIEST => 5,
                        TIMESTAMP_LATEST => 40 + i64::from(p.partition_index),
                        other => panic!("unexpected timestamp {other}"),
                    };
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_offset(offset)
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics).into()
}
