//! Request decoding under hostile input: a seeded mutation fuzzer over valid
//! requests, and hand-made attacks. Decoding must return a typed error, never panic
//! or allocate without bound.
//!
//! `STRAND_FUZZ_ITERATIONS=N` (default 20 000) and `STRAND_FUZZ_SEED=S` run longer
//! or other campaigns: `STRAND_FUZZ_ITERATIONS=5000000 cargo test -p strand-net
//! --release --test malformed`.

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
    TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use strand_net::kafka::{decode_request, DecodeError};

fn served(key: ApiKey) -> Option<(i16, i16)> {
    match key {
        ApiKey::Produce => Some((3, 9)),
        ApiKey::Fetch => Some((4, 12)),
        ApiKey::Metadata => Some((0, 12)),
        ApiKey::ApiVersions => Some((0, 3)),
        _ => None,
    }
}

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> BytesMut {
    let mut out = BytesMut::new();
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    header
        .encode(&mut out, key.request_header_version(version))
        .expect("header encodes");
    body.encode(&mut out, version).expect("body encodes");
    out
}

fn corpus() -> Vec<BytesMut> {
    let topic = TopicName(StrBytes::from_static_str("t"));
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic.clone())),
    ]));
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic)
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(bytes::Bytes::from_static(&[1, 2, 3, 4])))])]);
    let mut out = Vec::new();
    for v in [0, 1, 4, 9, 12] {
        out.push(frame(ApiKey::Metadata, v, &metadata));
    }
    for v in [3, 7, 9] {
        out.push(frame(ApiKey::Produce, v, &produce));
    }
    for v in [4, 12] {
        out.push(frame(ApiKey::Fetch, v, &FetchRequest::default()));
    }
    for v in [0, 3] {
        out.push(frame(
            ApiKey::ApiVersions,
            v,
            &ApiVersionsRequest::default(),
        ));
    }
    out
}

#[test]
fn the_corpus_decodes() {
    for f in corpus() {
        let r = decode_request(f, served);
        assert!(r.is_ok(), "{r:?}");
    }
}

#[test]
fn mutated_requests_give_typed_errors_never_panics() {
    let iterations: u64 = std::env::var("STRAND_FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let seed: u64 = std::env::var("STRAND_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xF0_22);
    let mut rng = fastrand::Rng::with_seed(seed);
    let corpus = corpus();
    let mut errors = 0u64;
    for _ in 0..iterations {
        let mut f = corpus[rng.usize(..corpus.len())].clone();
        for _ in 0..rng.usize(1..4) {
            match rng.u8(..4) {
                0 if !f.is_empty() => {
                    let i = rng.usize(..f.len());
                    f[i] = rng.u8(..);
                }
                1 => f.truncate(rng.usize(..=f.len())),
                2 if f.len() >= 4 => {
                    // Overwrite 4 bytes with a huge or negative count.
                    let i = rng.usize(..f.len() - 3);
                    let v = [i32::MAX, -1, 0x7fff_0000, rng.i32(..)][rng.usize(..4)];
                    f[i..i + 4].copy_from_slice(&v.to_be_bytes());
                }
                _ => f.put_slice(&[rng.u8(..); 3]),
            }
        }
        if decode_request(f, served).is_err() {
            errors += 1;
        }
    }
    assert!(
        errors > iterations / 10,
        "mutations should mostly fail to decode: {errors}"
    );
}

#[test]
fn an_array_claiming_two_billion_elements_is_an_error_not_an_abort() {
    // Metadata v1: topics is a non-nullable array; claim i32::MAX entries.
    let mut f = frame(
        ApiKey::Metadata,
        1,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    let len = f.len();
    f[len - 4..].copy_from_slice(&i32::MAX.to_be_bytes());
    assert!(matches!(
        decode_request(f, served),
        Err(DecodeError::Malformed { .. })
    ));
    // The same in a flexible version (compact array, unsigned varint count).
    let mut f = frame(
        ApiKey::Metadata,
        9,
        &MetadataRequest::default().with_topics(Some(vec![])),
    );
    let len = f.len();
    // Replace the compact count (1 byte, = 1 for an empty array) and tagged fields.
    f.truncate(len - 4);
    f.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x07]);
    assert!(decode_request(f, served).is_err());
}

#[test]
fn unknown_keys_and_versions_are_typed() {
    let mut f = frame(ApiKey::Metadata, 1, &MetadataRequest::default());
    f[0..2].copy_from_slice(&999i16.to_be_bytes());
    assert!(matches!(
        decode_request(f, served),
        Err(DecodeError::UnknownApiKey { api_key: 999, .. })
    ));
    let f = frame(ApiKey::ListOffsets, 1, &MetadataRequest::default());
    assert!(matches!(
        decode_request(f, served),
        Err(DecodeError::UnknownApiKey { .. })
    ));
    let mut f = frame(ApiKey::ApiVersions, 0, &ApiVersionsRequest::default());
    f[2..4].copy_from_slice(&99i16.to_be_bytes());
    assert!(matches!(
        decode_request(f, served),
        Err(DecodeError::UnsupportedVersion {
            api_key: ApiKey::ApiVersions,
            api_version: 99,
            correlation_id: 7
        })
    ));
    assert!(matches!(
        decode_request(BytesMut::from(&[0u8, 3][..]), served),
        Err(DecodeError::TooShort { len: 2 })
    ));
}
