//! Topic metadata: names, ids, partition counts and per-topic settings. Owned and
//! persisted by shard 0 (the metadata shard); every other shard holds an immutable
//! snapshot that shard 0 replaces by message when it changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub const TOPICS_FILE: &str = "topics.json";
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
pub const PARTITIONS_MAX: i32 = 10_000;

/// Per-topic settings clients can describe and alter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub max_message_bytes: u32,
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub id: [u8; 16],
    pub partitions: i32,
    pub config: TopicConfig,
    /// In a cluster: the replicas of each partition (node ids, the preferred leader
    /// first). Empty on a single node, which holds every partition itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Vec<u32>>,
    /// In a cluster: the controller log index that created the topic, which makes the
    /// replication group ids of its partitions unique for the cluster's life (a
    /// topic deleted and created again gets new groups).
    #[serde(default)]
    pub seq: u64,
}

/// A broker's Kafka address, as it registered with the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerAddr {
    pub host: String,
    pub port: u16,
}

/// An immutable snapshot of every topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    pub version: u64,
    pub topics: BTreeMap<String, TopicMeta>,
    /// In a cluster: every registered broker's Kafka address (from the controller).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub brokers: BTreeMap<u32, BrokerAddr>,
}

pub type TopicsView = Arc<Topics>;

/// Why a topic name is refused (INVALID_TOPIC_EXCEPTION).
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "topic name is {} bytes; the limit is {TOPIC_NAME_BYTES_MAX}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} holds {c:?}: use ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Directory of one partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join("topics").join(format!("{topic}-{partition}"))
}

impl Topics {
    pub fn load(data_dir: &Path) -> Result<Self, String> {
        let path = data_dir.join(TOPICS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is corrupt: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Write atomically and durably: temp file, fsync, rename, fsync the directory.
    pub fn save(&self, data_dir: &Path) -> Result<(), String> {
        let path = data_dir.join(TOPICS_FILE);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        write_durably(&path, &bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn by_id(&self, id: &[u8; 16]) -> Option<(&String, &TopicMeta)> {
        self.topics.iter().find(|(_, t)| &t.id == id)
    }
}

/// Replace the file at `path` with `bytes` atomically and durably: a temporary file
/// beside it, fsync, rename, fsync the directory. A crash leaves the old or the new
/// file, never a mix.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// A fresh random topic id.
pub fn new_topic_id() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(check_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "a b", "ü", "a/b"] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn topics_round_trip_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut t = Topics {
            version: 3,
            ..Topics::default()
        };
        t.topics.insert(
            "a".into(),
            TopicMeta {
                id: new_topic_id(),
                partitions: 4,
                config: TopicConfig {
                    retention_ms: Some(1000),
                    retention_bytes: None,
                    max_message_bytes: 1 << 20,
                    segment_bytes: 1 << 27,
                },
                replicas: Vec::new(),
                seq: 0,
            },
        );
        t.save(dir.path()).expect("save");
        assert_eq!(Topics::load(dir.path()).expect("load"), t);
        std::fs::write(dir.path().join(TOPICS_FILE), b"{not json").expect("write");
        assert!(Topics::load(dir.path()).is_err());
    }
}
