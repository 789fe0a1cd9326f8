//! The command line: `strand [--bootstrap HOST:PORT] topic <create|list|describe|delete|alter>`,
//! `strand group <list|describe|delete>`, `strand cluster ...` and the offline commands.

use std::collections::HashSet;

use anyhow::{bail, Result};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "strand",
    version,
    about = "Admin CLI for Strand (and any Kafka-compatible broker)"
)]
pub struct Cli {
    /// Broker to talk to; a comma-separated list is tried in order.
    #[arg(
        long,
        global = true,
        env = "STRAND_BOOTSTRAP",
        default_value = "127.0.0.1:9092",
        value_name = "HOST:PORT"
    )]
    pub bootstrap: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Read Strand's segment and index files offline (no broker needed).
    #[command(subcommand)]
    Segment(SegmentCommand),
    /// Measure the disk holding a directory, like `rpk iotune` (no broker needed).
    #[command(subcommand)]
    Disk(crate::probe::DiskCommand),
    /// Brokers, partitions, offsets and sizes at a glance.
    #[command(subcommand)]
    Cluster(crate::cluster::ClusterCommand),
    /// List, describe (members, committed offsets, lag) and delete consumer groups.
    #[command(subcommand)]
    Group(crate::group::GroupCommand),
    /// Make the cluster CA and node TLS certificates (no broker needed).
    #[command(subcommand)]
    Cert(crate::cert::CertCommand),
    /// Run a local cluster of strand-node processes on 127.0.0.1 (`up`, `down`).
    #[command(subcommand)]
    DevCluster(crate::dev_cluster::DevClusterCommand),
}

#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    /// Describe one `.log` segment or `.index` file.
    Inspect(InspectArgs),
    /// Check every batch CRC, offset continuity and index of a data directory;
    /// exits 1 when something is wrong.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub path: std::path::PathBuf,
    /// List every batch.
    #[arg(long)]
    pub batches: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A data directory (or any directory holding segments).
    pub dir: std::path::PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic (CreateTopics).
    Create(CreateArgs),
    /// List all topics with their partition counts (Metadata).
    List(ListArgs),
    /// Show partitions, leaders, offsets and configs of one topic.
    Describe(DescribeArgs),
    /// Delete a topic (DeleteTopics).
    Delete(DeleteArgs),
    /// Change a topic's configs (IncrementalAlterConfigs, else AlterConfigs) or grow its
    /// partition count (CreatePartitions).
    Alter(AlterArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[value(alias = "table")]
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub name: String,

    #[arg(long, default_value_t = 1)]
    pub partitions: i32,

    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,

    /// A topic config, e.g. `retention.ms=86400000`; repeat for more.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_pair)]
    pub configs: Vec<ConfigPair>,
}

/// `--output` alone (listings without other options).
#[derive(Debug, Args)]
pub struct OutputArgs {
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Also list internal topics (__consumer_offsets)
    #[arg(long)]
    pub internal: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    pub name: String,

    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub name: String,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["retention_ms", "retention_bytes", "max_message_bytes", "configs", "partitions"])
))]
pub struct AlterArgs {
    pub name: String,

    /// Sets `retention.ms` (-1: keep forever).
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub retention_ms: Option<i64>,

    /// Sets `retention.bytes` per partition (-1: no size limit).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true)]
    pub retention_bytes: Option<i64>,

    /// Sets `max.message.bytes`, the largest record batch the topic accepts.
    #[arg(long, value_name = "BYTES")]
    pub max_message_bytes: Option<i32>,

    /// Sets any topic config, e.g. `cleanup.policy=delete`; repeat for more.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_pair)]
    pub configs: Vec<ConfigPair>,

    /// The new total partition count (it can only grow).
    #[arg(long, value_name = "N")]
    pub partitions: Option<i32>,
}

impl AlterArgs {
    /// Every config change asked for, the named flags first; a key may appear only once.
    pub fn config_changes(&self) -> Result<Vec<ConfigPair>> {
        let named = [
            ("retention.ms", self.retention_ms.map(|v| v.to_string())),
            (
                "retention.bytes",
                self.retention_bytes.map(|v| v.to_string()),
            ),
            (
                "max.message.bytes",
                self.max_message_bytes.map(|v| v.to_string()),
            ),
        ];
        let changes: Vec<ConfigPair> = named
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| ConfigPair::new(key, value)))
            .chain(self.configs.iter().cloned())
            .collect();
        check_unique_keys(&changes)?;
        Ok(changes)
    }
}

/// One `KEY=VALUE` topic config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPair {
    pub key: String,
    pub value: String,
}

impl ConfigPair {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Parses `KEY=VALUE`; the value may itself contain `=` and may be empty.
pub fn parse_config_pair(text: &str) -> Result<ConfigPair, String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got `{text}`"));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("empty config key in `{text}`"));
    }
    if key.chars().any(char::is_whitespace) {
        return Err(format!("config key `{key}` contains whitespace"));
    }
    Ok(ConfigPair::new(key, value))
}

/// Refuses a config key given twice: which one was meant is not ours to guess.
pub fn check_unique_keys(configs: &[ConfigPair]) -> Result<()> {
    let mut seen = HashSet::new();
    for config in configs {
        if !seen.insert(config.key.as_str()) {
            bail!("config `{}` is given more than once", config.key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("strand").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn config_pairs_parse() {
        assert_eq!(
            parse_config_pair("retention.ms=1000"),
            Ok(ConfigPair::new("retention.ms", "1000"))
        );
        assert_eq!(
            parse_config_pair("cleanup.policy=compact,delete"),
            Ok(ConfigPair::new("cleanup.policy", "compact,delete"))
        );
        assert_eq!(parse_config_pair("a=b=c"), Ok(ConfigPair::new("a", "b=c")));
        assert_eq!(parse_config_pair("a="), Ok(ConfigPair::new("a", "")));
        assert!(parse_config_pair("retention.ms").is_err());
        assert!(parse_config_pair("=5").is_err());
        assert!(parse_config_pair("a b=5").is_err());
    }

    #[test]
    fn create_takes_defaults_and_repeated_configs() {
        let cli = parse(&[
            "topic",
            "create",
            "orders",
            "--config",
            "retention.ms=5",
            "--config",
            "max.message.bytes=9",
        ])
        .expect("valid");
        let Command::Topic(TopicCommand::Create(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.name, "orders");
        assert_eq!(args.partitions, 1);
        assert_eq!(args.replication_factor, 1);
        assert_eq!(
            args.configs,
            vec![
                ConfigPair::new("retention.ms", "5"),
                ConfigPair::new("max.message.bytes", "9")
            ]
        );
        assert_eq!(cli.bootstrap, "127.0.0.1:9092");
    }

    #[test]
    fn bad_flags_are_rejected_by_clap() {
        assert!(parse(&["topic", "create", "t", "--config", "nokey"]).is_err());
        assert!(parse(&["topic", "create", "t", "--partitions", "many"]).is_err());
        assert!(parse(&["topic", "create"]).is_err());
        assert!(parse(&["topic", "list", "--output", "yaml"]).is_err());
        // alter with nothing to change
        assert!(parse(&["topic", "alter", "t"]).is_err());
    }

    #[test]
    fn bootstrap_is_accepted_before_or_after_the_subcommand() {
        let cli = parse(&["--bootstrap", "h:1", "topic", "list"]).expect("valid");
        assert_eq!(cli.bootstrap, "h:1");
        let cli =
            parse(&["topic", "list", "--bootstrap", "h:2", "--output", "json"]).expect("valid");
        assert_eq!(cli.bootstrap, "h:2");
        assert!(matches!(
            cli.command,
            Command::Topic(TopicCommand::List(ListArgs {
                output: Output::Json,
                internal: false,
            }))
        ));
    }

    #[test]
    fn alter_collects_named_flags_and_configs() {
        let cli = parse(&[
            "topic",
            "alter",
            "t",
            "--retention-ms",
            "-1",
            "--retention-bytes",
            "1024",
            "--config",
            "cleanup.policy=delete",
        ])
        .expect("valid");
        let Command::Topic(TopicCommand::Alter(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(
            args.config_changes().expect("unique"),
            vec![
                ConfigPair::new("retention.ms", "-1"),
                ConfigPair::new("retention.bytes", "1024"),
                ConfigPair::new("cleanup.policy", "delete"),
            ]
        );
        assert_eq!(args.partitions, None);
    }

    #[test]
    fn alter_refuses_a_key_given_twice() {
        let cli = parse(&[
            "topic",
            "alter",
            "t",
            "--retention-ms",
            "5",
            "--config",
            "retention.ms=6",
        ])
        .expect("valid flags");
        let Command::Topic(TopicCommand::Alter(args)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        let err = args.config_changes().expect_err("duplicate key");
        assert!(err.to_string().contains("retention.ms"), "{err}");
    }
}
