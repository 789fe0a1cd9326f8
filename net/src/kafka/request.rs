//! Request decoding: header, then body at the negotiated version.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;

/// A decoded request.
#[derive(Debug)]
pub struct Request {
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
    pub body: RequestKind,
}

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not even the fixed header fields are there: disconnect.
    #[error("request of {len} bytes is too short for a header")]
    TooShort { len: usize },
    /// An API key this node does not serve: disconnect (as Kafka does).
    #[error("unknown or unsupported API key {api_key}")]
    UnknownApiKey { api_key: i16, correlation_id: i32 },
    /// A version outside the served range. For ApiVersions the caller answers
    /// UNSUPPORTED_VERSION in a v0 body (KIP-511); otherwise it disconnects.
    #[error("{api_key:?} v{api_version} is not supported")]
    UnsupportedVersion {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
    },
    /// The header or body does not decode: disconnect.
    #[error("malformed {api_key:?} v{api_version} request: {reason}")]
    Malformed {
        api_key: ApiKey,
        api_version: i16,
        correlation_id: i32,
        reason: String,
    },
}

impl DecodeError {
    /// The correlation id, when the header got that far.
    pub fn correlation_id(&self) -> Option<i32> {
        match self {
            DecodeError::TooShort { .. } => None,
            DecodeError::UnknownApiKey { correlation_id, .. }
            | DecodeError::UnsupportedVersion { correlation_id, .. }
            | DecodeError::Malformed { correlation_id, .. } => Some(*correlation_id),
        }
    }
}

/// Decode a request frame. `served` gives the version range this node serves for
/// an API key (None: not served).
pub fn decode_request(
    frame: BytesMut,
    served: impl Fn(ApiKey) -> Option<(i16, i16)>,
) -> Result<Request, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::TooShort { len: frame.len() });
    }
    let mut bytes: Bytes = frame.freeze();
    let raw_key = i16::from_be_bytes([bytes[0], bytes[1]]);
    let api_version = i16::from_be_bytes([bytes[2], bytes[3]]);
    let correlation_id = i32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let api_key = ApiKey::try_from(raw_key).map_err(|()| DecodeError::UnknownApiKey {
        api_key: raw_key,
        correlation_id,
    })?;
    let Some((min, max)) = served(api_key) else {
        return Err(DecodeError::UnknownApiKey {
            api_key: raw_key,
            correlation_id,
        });
    };
    if api_version < min || api_version > max {
        return Err(DecodeError::UnsupportedVersion {
            api_key,
            api_version,
            correlation_id,
        });
    }
    let malformed = |reason: String| DecodeError::Malformed {
        api_key,
        api_version,
        correlation_id,
        reason,
    };
    let header_version = api_key.request_header_version(api_version);
    let header = RequestHeader::decode(&mut bytes, header_version)
        .map_err(|e| malformed(format!("header: {e}")))?;
    let body = RequestKind::decode(api_key, &mut bytes, api_version)
        .map_err(|e| malformed(format!("body: {e}")))?;
    // Bytes after the body are ignored, as Apache Kafka does: librdkafka 2.16 sends
    // Metadata v12 with three trailing zero bytes.
    Ok(Request {
        api_key,
        api_version,
        correlation_id,
        client_id: header.client_id.map(|s| s.to_string()),
        body,
    })
}
