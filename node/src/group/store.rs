//! What the coordinator keeps in `__consumer_offsets`: one record per committed
//! offset (key: group, topic, partition) and one per group (key: group), JSON in
//! plain RecordBatch v2 records. The last record of a key wins; a null value
//! deletes it (a tombstone), as in Kafka's compacted topic. Loading a partition
//! replays its records in order into a fresh [`Coordinator`].
//!
//! JSON rather than Kafka's internal binary schema: the log is only read by Strand,
//! and `strand segment inspect` shows it to a person as is.

use std::collections::BTreeSet;

use kafka_protocol::messages::{ConsumerProtocolAssignment, ConsumerProtocolSubscription};
use kafka_protocol::protocol::Decodable;
use serde::{Deserialize, Serialize};

use super::coordinator::Coordinator;
use crate::cluster::records;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKey {
    /// A committed offset.
    #[serde(rename = "offset")]
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    /// A group's metadata.
    #[serde(rename = "group")]
    Group { group: String },
    /// Written when a coordinator takes over a partition: once it is committed,
    /// everything before it is too, so the replay reads all that was acknowledged.
    #[serde(rename = "barrier")]
    Barrier { node: u32, term: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: u64,
    pub rebalance_timeout_ms: u64,
    /// The member's metadata for the group's protocol.
    pub subscription: Vec<u8>,
    pub assignment: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<MemberValue>,
}

/// One record to write: the key and its value (None: a tombstone).
#[derive(Debug, Clone)]
pub struct Record {
    pub key: RecordKey,
    pub value: Option<Vec<u8>>,
}

impl Record {
    pub fn offset(group: &str, topic: &str, partition: i32, v: Option<&OffsetValue>) -> Self {
        Record {
            key: RecordKey::Offset {
                group: group.to_string(),
                topic: topic.to_string(),
                partition,
            },
            value: v.map(json),
        }
    }

    pub fn group(group: &str, v: Option<&GroupValue>) -> Self {
        Record {
            key: RecordKey::Group {
                group: group.to_string(),
            },
            value: v.map(json),
        }
    }
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs to JSON cannot fail (string keys, no maps
    // with non-string keys); an empty value would be replayed as unreadable.
    serde_json::to_vec(v).unwrap_or_default()
}

/// One batch holding `records`, ready to produce.
pub fn batch(records: &[Record], timestamp: i64) -> Vec<u8> {
    let keys: Vec<Vec<u8>> = records.iter().map(|r| json(&r.key)).collect();
    let kv: Vec<(&[u8], Option<&[u8]>)> = keys
        .iter()
        .zip(records)
        .map(|(k, r)| (k.as_slice(), r.value.as_deref()))
        .collect();
    records::key_value_batch(&kv, timestamp)
}

/// Replay every record of a batch into `c`; returns how many records could not be
/// read (skipped, and logged by the caller).
pub fn replay(c: &mut Coordinator, batch: &[u8]) -> usize {
    let Some(records) = records::key_values(batch) else {
        // Control batches (leader changes) carry nothing for groups.
        return 0;
    };
    let mut bad = 0;
    for (key, value) in records {
        let Some(key) = key.and_then(|k| serde_json::from_slice::<RecordKey>(k).ok()) else {
            bad += 1;
            continue;
        };
        match key {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => match value.map(serde_json::from_slice::<OffsetValue>) {
                None => c.replay_offset(&group, &topic, partition, None),
                Some(Ok(v)) => c.replay_offset(&group, &topic, partition, Some(v)),
                Some(Err(_)) => bad += 1,
            },
            RecordKey::Group { group } => match value.map(serde_json::from_slice::<GroupValue>) {
                None => c.replay_group(&group, None),
                Some(Ok(v)) => c.replay_group(&group, Some(v)),
                Some(Err(_)) => bad += 1,
            },
            RecordKey::Barrier { .. } => {}
        }
    }
    bad
}

/// The partitions of a consumer-protocol assignment (version i16, then the body),
/// or None if the bytes are not one.
pub fn assigned_partitions(bytes: &[u8]) -> Option<BTreeSet<(String, i32)>> {
    if bytes.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let mut buf = bytes::Bytes::copy_from_slice(&bytes[2..]);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3)).ok()?;
    Some(
        a.assigned_partitions
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| (t.topic.0.to_string(), *p))
            })
            .collect(),
    )
}

/// The topics a consumer-protocol subscription names (empty if unreadable).
pub fn subscribed_topics(bytes: &[u8]) -> Vec<String> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let mut buf = bytes::Bytes::copy_from_slice(&bytes[2..]);
    ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3))
        .map(|s| s.topics.iter().map(|t| t.to_string()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::coordinator::Settings;

    fn settings() -> Settings {
        Settings {
            initial_rebalance_delay_ms: 0,
            min_session_timeout_ms: 1,
            max_session_timeout_ms: 1_000_000,
        }
    }

    #[test]
    fn records_replay_last_wins_and_tombstones_delete() {
        let v = |o| OffsetValue {
            offset: o,
            leader_epoch: -1,
            metadata: None,
            commit_ms: 1,
        };
        let b1 = batch(
            &[
                Record::offset("g", "t", 0, Some(&v(5))),
                Record::offset("g", "t", 1, Some(&v(7))),
            ],
            1,
        );
        let b2 = batch(
            &[
                Record::offset("g", "t", 0, Some(&v(9))),
                Record::offset("g", "t", 1, None),
            ],
            2,
        );
        let mut c = Coordinator::new(settings());
        assert_eq!(replay(&mut c, &b1), 0);
        assert_eq!(replay(&mut c, &b2), 0);
        let got = c.committed("g", None);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "t");
        assert_eq!(got[0].1, 0);
        assert_eq!(got[0].2.as_ref().map(|c| c.offset), Some(9));
    }

    #[test]
    fn unreadable_records_are_counted_not_applied() {
        let b = records::key_value_batch(&[(b"not json", Some(b"x"))], 1);
        let mut c = Coordinator::new(settings());
        assert_eq!(replay(&mut c, &b), 1);
        assert!(c.list().is_empty());
    }

    #[test]
    fn consumer_assignment_decodes() {
        use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut a = ConsumerProtocolAssignment::default();
        let mut tp = TopicPartition::default();
        tp.topic = kafka_protocol::messages::TopicName(StrBytes::from_static_str("t"));
        tp.partitions = vec![0, 3];
        a.assigned_partitions = vec![tp];
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        a.encode(&mut buf, 1).expect("encodes");
        let got = assigned_partitions(&buf).expect("decodes");
        assert_eq!(
            got,
            [("t".to_string(), 0), ("t".to_string(), 3)]
                .into_iter()
                .collect()
        );
        assert_eq!(assigned_partitions(b"\x00"), None);
    }
}
