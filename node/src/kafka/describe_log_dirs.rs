//! DescribeLogDirs (KIP-113): the data directory is the node's one log dir; each
//! partition's size is the bytes of its segment files; v4 (KIP-827) adds the total and
//! usable bytes of the data directory's file system.
//!
//! Sizes come from the owning shards, one `Op::Statuses` message per shard. As in
//! Kafka's `ReplicaManager.describeLogDirs`, the answer lists only the partitions the
//! node hosts: the response has no per-partition error code, so an unknown topic or
//! partition is left out, and a log that cannot be opened turns the log dir's error
//! code into KAFKA_STORAGE_ERROR (the other partitions are still listed).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{errors, topic_name};
use crate::router::{Op, OpResult, PartitionStatus};
use crate::shard::Shard;
use crate::topics::Topics;

/// The first version whose log dir result carries total and usable bytes (KIP-827).
const VOLUME_BYTES_VERSION: i16 = 4;

/// A partition as (topic, partition index).
type PartitionKey = (String, i32);

/// Size and capacity of the file system holding a directory, as Java's
/// `FileStore.getTotalSpace` / `getUsableSpace` report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeBytes {
    pub total: i64,
    /// What an unprivileged writer may still use (`f_bavail`).
    pub usable: i64,
}

pub async fn handle(
    shard: &Rc<Shard>,
    r: DescribeLogDirsRequest,
    version: i16,
) -> DescribeLogDirsResponse {
    let wanted = wanted_partitions(&shard.topics(), r.topics.as_deref());
    let statuses = gather(shard, wanted).await;
    let data_dir = &shard.config().data_dir;
    let volume = if version >= VOLUME_BYTES_VERSION {
        volume_bytes(data_dir)
            .map_err(|e| {
                tracing::warn!(dir = %data_dir.display(), error = %e, "statvfs failed");
            })
            .ok()
    } else {
        None
    };
    response(&log_dir_name(data_dir), &statuses, volume)
}

/// The partitions asked about that exist, each once (Kafka collects them in a set).
/// `None` asks for every partition of every topic.
pub fn wanted_partitions(
    topics: &Topics,
    requested: Option<&[DescribableLogDirTopic]>,
) -> BTreeSet<PartitionKey> {
    let Some(requested) = requested else {
        return topics
            .topics
            .iter()
            .flat_map(|(name, meta)| (0..meta.partitions).map(|p| (name.clone(), p)))
            .collect();
    };
    requested
        .iter()
        .flat_map(|t| {
            let name = t.topic.0.as_str();
            let count = topics.topics.get(name).map_or(0, |meta| meta.partitions);
            t.partitions
                .iter()
                .filter(move |p| (0..count).contains(*p))
                .map(move |&p| (name.to_owned(), p))
        })
        .collect()
}

/// Ask each owning shard, concurrently, for the status of its partitions.
async fn gather(
    shard: &Rc<Shard>,
    wanted: BTreeSet<PartitionKey>,
) -> Vec<(PartitionKey, PartitionStatus)> {
    let mut by_owner: BTreeMap<usize, Vec<PartitionKey>> = BTreeMap::new();
    for key in wanted {
        by_owner
            .entry(shard.owner_of(&key.0, key.1))
            .or_default()
            .push(key);
    }
    let tasks: Vec<_> = by_owner
        .into_iter()
        .map(|(owner, partitions)| {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let op = Op::Statuses {
                    partitions: partitions.clone(),
                };
                let statuses = match shard.run_op(owner, op).await {
                    Some(OpResult::Statuses(s)) if s.len() == partitions.len() => s,
                    // The owner is gone (shutdown) or answered something else.
                    _ => vec![unanswered(); partitions.len()],
                };
                partitions.into_iter().zip(statuses).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.extend(task.await);
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn unanswered() -> PartitionStatus {
    PartitionStatus {
        error_code: errors::UNKNOWN_SERVER_ERROR,
        ..PartitionStatus::default()
    }
}

/// The response for one log dir from the partitions' statuses (sorted by topic, then
/// partition). A partition that is gone (deleted meanwhile) is left out; one that
/// failed is left out and sets the log dir's error code.
pub fn response(
    log_dir: &str,
    statuses: &[(PartitionKey, PartitionStatus)],
    volume: Option<VolumeBytes>,
) -> DescribeLogDirsResponse {
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = StrBytes::from_string(log_dir.to_owned());
    for ((topic, partition), status) in statuses {
        match status.error_code {
            errors::NONE => {}
            errors::UNKNOWN_TOPIC_OR_PARTITION => continue,
            code => {
                tracing::warn!(topic, partition, code, "no size for a partition");
                if result.error_code == errors::NONE {
                    result.error_code = if code == errors::KAFKA_STORAGE_ERROR {
                        code
                    } else {
                        errors::UNKNOWN_SERVER_ERROR
                    };
                }
                continue;
            }
        }
        if result
            .topics
            .last()
            .is_none_or(|t| t.name.0.as_str() != topic.as_str())
        {
            let mut t = DescribeLogDirsTopic::default();
            t.name = topic_name(topic);
            result.topics.push(t);
        }
        let mut p = DescribeLogDirsPartition::default();
        p.partition_index = *partition;
        p.partition_size = i64::try_from(status.size_bytes).unwrap_or(i64::MAX);
        // No replication yet: the log is the current one and nothing lags.
        p.offset_lag = 0;
        p.is_future_key = false;
        if let Some(t) = result.topics.last_mut() {
            t.partitions.push(p);
        }
    }
    if let Some(v) = volume {
        result.total_bytes = v.total;
        result.usable_bytes = v.usable;
    }
    let mut out = DescribeLogDirsResponse::default();
    out.results = vec![result];
    out
}

/// The log dir's name: the data directory as an absolute path, as Kafka reports it.
fn log_dir_name(data_dir: &Path) -> String {
    std::path::absolute(data_dir)
        .unwrap_or_else(|_| data_dir.to_path_buf())
        .display()
        .to_string()
}

/// `statvfs` of `dir`. Sizes past `i64::MAX` are reported as `i64::MAX`, as Kafka's
/// `adjustForLargeFileSystems` does.
pub fn volume_bytes(dir: &Path) -> std::io::Result<VolumeBytes> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `st` points
    // to writable memory the size of a `statvfs`, which the call fills on success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    let bytes = |blocks: u64| -> i64 {
        i64::try_from(blocks.saturating_mul(st.f_frsize)).unwrap_or(i64::MAX)
    };
    Ok(VolumeBytes {
        total: bytes(st.f_blocks),
        usable: bytes(st.f_bavail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topics::{TopicConfig, TopicMeta};
    use bytes::BytesMut;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn topics(list: &[(&str, i32)]) -> Topics {
        let config = TopicConfig {
            retention_ms: None,
            retention_bytes: None,
            max_message_bytes: 1 << 20,
            segment_bytes: 1 << 30,
        };
        Topics {
            version: 1,
            brokers: Default::default(),
            topics: list
                .iter()
                .map(|&(name, partitions)| {
                    let meta = TopicMeta {
                        replicas: Vec::new(),
                        seq: 0,
                        id: [1; 16],
                        partitions,
                        config: config.clone(),
                    };
                    (name.to_owned(), meta)
                })
                .collect(),
        }
    }

    fn ask(topic: &str, partitions: &[i32]) -> DescribableLogDirTopic {
        let mut t = DescribableLogDirTopic::default();
        t.topic = topic_name(topic);
        t.partitions = partitions.to_vec();
        t
    }

    fn keys(list: &[(&str, i32)]) -> BTreeSet<PartitionKey> {
        list.iter().map(|&(t, p)| (t.to_owned(), p)).collect()
    }

    /// (index, size, offset lag, is future)
    type PartitionShape = (i32, i64, i64, bool);

    fn ok(size_bytes: u64) -> PartitionStatus {
        PartitionStatus {
            size_bytes,
            ..PartitionStatus::default()
        }
    }

    fn failed(error_code: i16) -> PartitionStatus {
        PartitionStatus {
            error_code,
            ..PartitionStatus::default()
        }
    }

    #[test]
    fn null_topics_means_every_partition_of_every_topic() {
        let t = topics(&[("b", 2), ("a", 1)]);
        assert_eq!(
            wanted_partitions(&t, None),
            keys(&[("a", 0), ("b", 0), ("b", 1)])
        );
        assert!(wanted_partitions(&t, Some(&[])).is_empty());
    }

    #[test]
    fn unknown_topics_and_partitions_are_left_out_and_repeats_count_once() {
        // Kafka builds a set of the requested partitions and answers for the ones it
        // hosts (ReplicaManager.describeLogDirs); the response has no per-partition
        // error code.
        let t = topics(&[("a", 3)]);
        let asked = [
            ask("a", &[2, 0, 2, 3, -1, i32::MAX, i32::MIN]),
            ask("nope", &[0]),
            ask("a", &[0, 1]),
            ask("", &[]),
        ];
        assert_eq!(
            wanted_partitions(&t, Some(&asked)),
            keys(&[("a", 0), ("a", 1), ("a", 2)])
        );
    }

    #[test]
    fn response_groups_partitions_by_topic() {
        let statuses = vec![
            (("a".to_owned(), 0), ok(4096)),
            (("a".to_owned(), 1), ok(8192)),
            (("b".to_owned(), 0), ok(u64::MAX)),
        ];
        let volume = VolumeBytes {
            total: 100,
            usable: 40,
        };
        let r = response("/data", &statuses, Some(volume));
        assert_eq!(r.error_code, errors::NONE);
        let [result] = &r.results[..] else {
            panic!("one log dir: {r:?}");
        };
        assert_eq!(result.error_code, errors::NONE);
        assert_eq!(result.log_dir.as_str(), "/data");
        assert_eq!((result.total_bytes, result.usable_bytes), (100, 40));
        let shape: Vec<(&str, Vec<PartitionShape>)> = result
            .topics
            .iter()
            .map(|t| {
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        (
                            p.partition_index,
                            p.partition_size,
                            p.offset_lag,
                            p.is_future_key,
                        )
                    })
                    .collect();
                (t.name.0.as_str(), parts)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a", vec![(0, 4096, 0, false), (1, 8192, 0, false)]),
                ("b", vec![(0, i64::MAX, 0, false)]),
            ]
        );
    }

    #[test]
    fn failed_partitions_are_left_out_and_flag_the_log_dir() {
        let statuses = vec![
            (
                ("a".to_owned(), 0),
                failed(errors::UNKNOWN_TOPIC_OR_PARTITION),
            ),
            (("a".to_owned(), 1), ok(1)),
            (("a".to_owned(), 2), failed(errors::KAFKA_STORAGE_ERROR)),
        ];
        let r = response("/d", &statuses, None);
        let result = &r.results[0];
        assert_eq!(result.error_code, errors::KAFKA_STORAGE_ERROR);
        assert_eq!(result.topics.len(), 1);
        let listed: Vec<i32> = result.topics[0]
            .partitions
            .iter()
            .map(|p| p.partition_index)
            .collect();
        assert_eq!(listed, [1]);
        // Without v4 the volume fields keep their "unknown" defaults.
        assert_eq!((result.total_bytes, result.usable_bytes), (-1, -1));

        let gone_only = [(
            ("a".to_owned(), 0),
            failed(errors::UNKNOWN_TOPIC_OR_PARTITION),
        )];
        let r = response("/d", &gone_only, None);
        assert_eq!(r.results[0].error_code, errors::NONE);
        assert!(r.results[0].topics.is_empty());
        let unanswered = [(("a".to_owned(), 0), unanswered())];
        let r = response("/d", &unanswered, None);
        assert_eq!(r.results[0].error_code, errors::UNKNOWN_SERVER_ERROR);
    }

    #[test]
    fn response_encodes_and_decodes_at_every_served_version() {
        let statuses = vec![(("a".to_owned(), 0), ok(4096))];
        let volume = VolumeBytes {
            total: 100,
            usable: 40,
        };
        for version in 1..=4 {
            let r = response("/data", &statuses, (version >= 4).then_some(volume));
            let mut buf = BytesMut::new();
            r.encode(&mut buf, version).expect("encode");
            let decoded =
                DescribeLogDirsResponse::decode(&mut buf.freeze(), version).expect("decode");
            assert_eq!(decoded, r, "v{version}");
        }
    }

    #[test]
    fn volume_bytes_of_a_real_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = volume_bytes(dir.path()).expect("statvfs");
        assert!(v.total > 0, "{v:?}");
        assert!((0..=v.total).contains(&v.usable), "{v:?}");
        let err = volume_bytes(&dir.path().join("missing")).expect_err("no such directory");
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        assert!(volume_bytes(Path::new("a\0b")).is_err(), "interior NUL");
    }
}
