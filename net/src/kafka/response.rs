//! Response encoding: size prefix, response header, body.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;

/// UNSUPPORTED_VERSION.
const UNSUPPORTED_VERSION: i16 = 35;

/// Encode a whole response frame. The crate omits tagged fields that hold their
/// default values, which old librdkafka (Debian 12's kcat, 2.0.2) needs.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    api_version: i16,
    body: &ResponseKind,
) -> anyhow_free::Result<Bytes> {
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0); // size, patched below
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut out, api_key.response_header_version(api_version))
        .map_err(|e| anyhow_free::EncodeError(e.to_string()))?;
    body.encode(&mut out, api_version)
        .map_err(|e| anyhow_free::EncodeError(e.to_string()))?;
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(out.freeze())
}

/// The answer to an ApiVersions request at a version we do not serve: error
/// UNSUPPORTED_VERSION in a v0 body with the supported ranges, so the client retries
/// at a version it finds there (KIP-511).
pub fn unsupported_api_versions_response(
    correlation_id: i32,
    supported: &[(ApiKey, i16, i16)],
) -> anyhow_free::Result<Bytes> {
    let body = ApiVersionsResponse::default()
        .with_error_code(UNSUPPORTED_VERSION)
        .with_api_keys(
            supported
                .iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(key as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        );
    encode_response(
        correlation_id,
        ApiKey::ApiVersions,
        0,
        &ResponseKind::ApiVersions(body),
    )
}

/// A tiny error type so callers need no `anyhow`.
pub mod anyhow_free {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot encode response: {0}")]
    pub struct EncodeError(pub String);
    pub type Result<T> = std::result::Result<T, EncodeError>;
}
