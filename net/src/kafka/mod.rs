//! The Kafka wire protocol: length-prefixed frames, request headers, responses.
//! Message bodies are encoded and decoded by the `kafka-protocol` crate.

mod frame;
mod request;
mod response;

pub use frame::{read_frame, read_frame_body, read_frame_size, FrameError};
pub use request::{decode_request, DecodeError, Request};
pub use response::{encode_response, unsupported_api_versions_response};

pub use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
