//! `strand cluster elect-leaders`: give each partition's leadership back to its
//! preferred replica (the first of its replica list), as after a rolling restart.
//!
//! ElectLeaders (preferred) goes to each partition's current leader, which hands
//! leadership over by a Raft transfer and answers once the preferred replica leads.

use std::collections::BTreeMap;

use anyhow::Result;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::errors::error_name;
use crate::render::table;
use crate::topic::{metadata_request, ClusterMetadata};

/// Kafka's ELECTION_NOT_NEEDED: the preferred replica leads already.
const ELECTION_NOT_NEEDED: i16 = 84;
const ELECTION_TIMEOUT_MS: i32 = 10_000;

/// One row of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub topic: String,
    pub partition: i32,
    pub preferred: i32,
    pub leader_before: i32,
    /// "elected", "already preferred", or the error.
    pub result: String,
}

pub fn elect_leaders(client: &mut Client, topic: Option<&str>) -> Result<String> {
    let elections = run(client, topic)?;
    if elections.is_empty() {
        return Ok("every partition is led by its preferred replica\n".to_string());
    }
    let rows: Vec<Vec<String>> = elections
        .iter()
        .map(|e| {
            vec![
                e.topic.clone(),
                e.partition.to_string(),
                e.leader_before.to_string(),
                e.preferred.to_string(),
                e.result.clone(),
            ]
        })
        .collect();
    Ok(table(
        &["TOPIC", "PARTITION", "LEADER", "PREFERRED", "RESULT"],
        &rows,
    ))
}

fn run(client: &mut Client, topic: Option<&str>) -> Result<Vec<Election>> {
    let version = client.version(ApiKey::Metadata)?;
    let names = topic.map(|t| [t]);
    let response = client.send(
        &metadata_request(names.as_ref().map(|n| &n[..]), version),
        version,
    )?;
    let metadata = ClusterMetadata::from_response(response);
    // Partitions not led by their preferred replica, grouped by current leader.
    let mut by_leader: BTreeMap<i32, Vec<Election>> = BTreeMap::new();
    for t in &metadata.topics {
        for p in &t.partitions {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            if p.leader == preferred {
                continue;
            }
            by_leader.entry(p.leader).or_default().push(Election {
                topic: t.name.clone(),
                partition: p.id,
                preferred,
                leader_before: p.leader,
                result: String::new(),
            });
        }
    }
    let mut out = Vec::new();
    for (leader, mut elections) in by_leader {
        let broker = metadata.brokers.iter().find(|b| b.id == leader);
        let outcome = match broker {
            None => Err(format!("leader {leader} is unknown (no leader right now?)")),
            Some(b) => ask(&b.address(), &elections),
        };
        match outcome {
            Ok(results) => {
                for e in &mut elections {
                    e.result = results
                        .get(&(e.topic.clone(), e.partition))
                        .cloned()
                        .unwrap_or_else(|| "no answer".to_string());
                }
            }
            Err(why) => elections.iter_mut().for_each(|e| e.result = why.clone()),
        }
        out.extend(elections);
    }
    out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(out)
}

/// Send one ElectLeaders (preferred) for `elections` to the broker at `addr`.
fn ask(addr: &str, elections: &[Election]) -> Result<BTreeMap<(String, i32), String>, String> {
    let mut client = Client::connect(addr).map_err(|e| format!("{e:#}"))?;
    let version = client
        .version(ApiKey::ElectLeaders)
        .map_err(|e| format!("{e:#}"))?;
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for e in elections {
        topics.entry(&e.topic).or_default().push(e.partition);
    }
    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(ELECTION_TIMEOUT_MS)
        .with_topic_partitions(Some(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    TopicPartitions::default()
                        .with_topic(TopicName(StrBytes::from_string(name.to_string())))
                        .with_partitions(partitions)
                })
                .collect(),
        ));
    let response = client
        .send(&request, version)
        .map_err(|e| format!("{e:#}"))?;
    if response.error_code != 0 {
        return Err(error_name(response.error_code));
    }
    let mut out = BTreeMap::new();
    for t in response.replica_election_results {
        for p in t.partition_result {
            let result = match p.error_code {
                0 => "elected".to_string(),
                ELECTION_NOT_NEEDED => "already preferred".to_string(),
                code => match p.error_message {
                    Some(m) => format!("{}: {m}", error_name(code)),
                    None => error_name(code),
                },
            };
            out.insert((t.topic.0.to_string(), p.partition_id), result);
        }
    }
    Ok(out)
}
