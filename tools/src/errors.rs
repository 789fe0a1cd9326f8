//! Kafka error codes, named as Kafka names them (`UNKNOWN_TOPIC_OR_PARTITION`).

use std::fmt;

use kafka_protocol::ResponseError;

/// The Kafka name of an error code: `0` is `NONE`, `3` is `UNKNOWN_TOPIC_OR_PARTITION`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => "NONE".to_owned(),
        Some(ResponseError::Unknown(code)) => format!("UNKNOWN_ERROR_CODE_{code}"),
        // kafka-protocol names its variants in CamelCase after Kafka's Errors.java.
        Some(known) => screaming_snake(&format!("{known:?}")),
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// An error a broker answered with, for one operation on one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerError {
    /// What was being done, e.g. "create topic orders".
    pub operation: String,
    pub code: i16,
    /// The broker's own explanation, when it sent one.
    pub message: Option<String>,
}

impl fmt::Display for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.operation, error_name(self.code))?;
        match self.message.as_deref() {
            Some(message) if !message.is_empty() => write!(f, ": {message}"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for BrokerError {}

/// `Ok` for error code 0, else the broker's error for `operation`.
pub fn check(
    code: i16,
    message: Option<&str>,
    operation: impl FnOnce() -> String,
) -> Result<(), BrokerError> {
    if code == 0 {
        return Ok(());
    }
    Err(BrokerError {
        operation: operation(),
        code,
        message: message.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_codes_have_kafka_names() {
        // Names from Kafka's Errors.java / the protocol guide's error table.
        let cases = [
            (0, "NONE"),
            (-1, "UNKNOWN_SERVER_ERROR"),
            (3, "UNKNOWN_TOPIC_OR_PARTITION"),
            (5, "LEADER_NOT_AVAILABLE"),
            (6, "NOT_LEADER_OR_FOLLOWER"),
            (7, "REQUEST_TIMED_OUT"),
            (17, "INVALID_TOPIC_EXCEPTION"),
            (35, "UNSUPPORTED_VERSION"),
            (36, "TOPIC_ALREADY_EXISTS"),
            (37, "INVALID_PARTITIONS"),
            (38, "INVALID_REPLICATION_FACTOR"),
            (40, "INVALID_CONFIG"),
            (41, "NOT_CONTROLLER"),
            (42, "INVALID_REQUEST"),
            (44, "POLICY_VIOLATION"),
            (56, "KAFKA_STORAGE_ERROR"),
            (73, "TOPIC_DELETION_DISABLED"),
            (100, "UNKNOWN_TOPIC_ID"),
        ];
        for (code, name) in cases {
            assert_eq!(error_name(code), name, "code {code}");
        }
    }

    #[test]
    fn unknown_code_keeps_its_number() {
        assert_eq!(error_name(31_000), "UNKNOWN_ERROR_CODE_31000");
        assert_eq!(error_name(-7), "UNKNOWN_ERROR_CODE_-7");
    }

    #[test]
    fn broker_error_names_operation_code_and_message() {
        let err = check(36, Some("Topic 'a' already exists."), || {
            "create topic a".into()
        })
        .expect_err("code 36 is an error");
        assert_eq!(
            err.to_string(),
            "create topic a: TOPIC_ALREADY_EXISTS: Topic 'a' already exists."
        );
        let err = check(3, None, || "describe topic b".into()).expect_err("code 3 is an error");
        assert_eq!(
            err.to_string(),
            "describe topic b: UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert!(check(0, Some("ignored"), || unreachable!()).is_ok());
    }
}
