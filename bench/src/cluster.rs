//! Before a run: reach the cluster, make sure the topics exist, and learn which broker
//! leads each partition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::ApiKey;
use strand_tools::cli::CreateArgs;
use strand_tools::client::Client;
use strand_tools::errors::error_name;
use strand_tools::topic::{create_topics_request, metadata_request, ClusterMetadata};

use crate::settings::Workload;

/// Kafka's UNKNOWN_TOPIC_OR_PARTITION and TOPIC_ALREADY_EXISTS.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// How long new topics may take to get leaders.
const LEADERS_TIMEOUT: Duration = Duration::from_secs(15);

/// One partition the run writes to or reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRef {
    pub topic: String,
    pub partition: i32,
    /// Broker id of the leader.
    pub leader: i32,
}

/// Where everything is.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Broker id → `HOST:PORT`.
    pub brokers: BTreeMap<i32, String>,
    /// Every partition of every topic of the run, by topic then partition.
    pub partitions: Vec<PartitionRef>,
}

impl Layout {
    pub fn broker_addr(&self, id: i32) -> Result<&str> {
        self.brokers
            .get(&id)
            .map(String::as_str)
            .with_context(|| format!("broker {id} leads a partition but is not in the metadata"))
    }
}

/// Connects, creates missing topics (unless `--no-create`) and waits until every
/// partition has a leader.
pub fn prepare(bootstrap: &str, workload: &Workload) -> Result<Layout> {
    let mut client = Client::connect(bootstrap).map_err(|e| {
        anyhow::anyhow!("{e:#} (is a broker running there? `strand-bench --embedded` starts one)")
    })?;
    let names = workload.topic_names();
    let metadata = fetch(&mut client, &names)?;
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| {
            metadata
                .topics
                .iter()
                .find(|t| &t.name == *n)
                .is_none_or(|t| t.error_code == UNKNOWN_TOPIC_OR_PARTITION)
        })
        .collect();
    if !missing.is_empty() {
        if workload.no_create {
            bail!(
                "topic {} does not exist on {}: create it (`strand topic create {} \
                 --partitions {}`) or drop --no-create",
                missing[0],
                client.addr(),
                missing[0],
                workload.partitions
            );
        }
        let version = client.version(ApiKey::CreateTopics)?;
        for name in missing {
            let args = CreateArgs {
                name: name.clone(),
                partitions: workload.partitions,
                replication_factor: workload.replication_factor,
                configs: Vec::new(),
            };
            let response = client.send(&create_topics_request(&args), version)?;
            for t in &response.topics {
                if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
                    bail!(
                        "cannot create topic {name}: {}{}",
                        error_name(t.error_code),
                        t.error_message
                            .as_ref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    let deadline = Instant::now() + LEADERS_TIMEOUT;
    loop {
        let metadata = fetch(&mut client, &names)?;
        match layout(&metadata, &names) {
            Ok(layout) => return Ok(layout),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "the topics have no leaders after {} s",
                    LEADERS_TIMEOUT.as_secs()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn fetch(client: &mut Client, names: &[String]) -> Result<ClusterMetadata> {
    let version = client.version(ApiKey::Metadata)?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let response = client.send(&metadata_request(Some(&refs), version), version)?;
    Ok(ClusterMetadata::from_response(response))
}

/// The layout, or why it is not complete yet.
fn layout(metadata: &ClusterMetadata, names: &[String]) -> Result<Layout> {
    let brokers = metadata
        .brokers
        .iter()
        .map(|b| (b.id, b.address()))
        .collect();
    let mut partitions = Vec::new();
    for name in names {
        let Some(topic) = metadata.topics.iter().find(|t| &t.name == name) else {
            bail!("topic {name} is not in the metadata yet");
        };
        if topic.error_code != 0 {
            bail!("topic {name}: {}", error_name(topic.error_code));
        }
        if topic.partitions.is_empty() {
            bail!("topic {name} has no partitions yet");
        }
        for p in &topic.partitions {
            if p.error_code != 0 || p.leader < 0 {
                bail!("partition {name}-{} has no leader yet", p.id);
            }
            partitions.push(PartitionRef {
                topic: name.clone(),
                partition: p.id,
                leader: p.leader,
            });
        }
    }
    let layout = Layout {
        brokers,
        partitions,
    };
    for p in &layout.partitions {
        layout.broker_addr(p.leader)?;
    }
    Ok(layout)
}
