//! `strand`: the admin CLI (library part, shared with `strand-bench`). It speaks the Kafka protocol, so it works against Strand and
//! against any Kafka-compatible broker.
//!
//! Code map: `cli` (the command line), `client` (frames, version negotiation, one blocking
//! connection), `topic` (request builders, command flows, renderers), `group` (consumer
//! groups: list, describe with lag, delete), `render` (tables, JSON), `errors` (Kafka
//! error names). **The CLI knows nothing of Strand's internals**:
//! everything goes over the Kafka protocol, so the same commands check real Kafka.
//!
//! Exit codes: 0 success, 1 the operation failed (unreachable broker, broker error),
//! 2 bad command line (from clap).

pub mod cert;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod dev_cluster;
pub mod elect;
pub mod errors;
#[cfg(test)]
mod fake_broker;
pub mod group;
pub mod probe;
pub mod render;
pub mod segment;
pub mod topic;

use anyhow::Result;

use cli::{Cli, Command, SegmentCommand, TopicCommand};
use client::Client;
use group::GroupCommand;

/// Runs one command line and returns what to print.
pub fn run(cli: &Cli) -> Result<String> {
    // Offline commands first: they read files and need no broker.
    match &cli.command {
        Command::Segment(SegmentCommand::Inspect(args)) => {
            return segment::inspect(&args.path, args.batches)
        }
        Command::Segment(SegmentCommand::Verify(args)) => {
            let (report, ok) = segment::verify(&args.dir)?;
            if !ok {
                anyhow::bail!("{report}");
            }
            return Ok(report);
        }
        Command::Disk(disk) => return probe::command(disk),
        Command::Cert(cert) => return cert::command(cert),
        Command::DevCluster(dev) => return dev_cluster::command(dev),
        Command::Topic(_) | Command::Cluster(_) | Command::Group(_) => {}
    }
    let mut client = Client::connect(&cli.bootstrap)?;
    match &cli.command {
        Command::Segment(_) | Command::Disk(_) | Command::Cert(_) | Command::DevCluster(_) => {
            unreachable!("handled above")
        }
        Command::Topic(TopicCommand::Create(args)) => topic::create(&mut client, args),
        Command::Topic(TopicCommand::List(args)) => {
            topic::list(&mut client, args.output, args.internal)
        }
        Command::Topic(TopicCommand::Describe(args)) => {
            topic::describe(&mut client, &args.name, args.output)
        }
        Command::Topic(TopicCommand::Delete(args)) => topic::delete(&mut client, &args.name),
        Command::Topic(TopicCommand::Alter(args)) => topic::alter(&mut client, args),
        Command::Cluster(cluster::ClusterCommand::Status(args)) => {
            cluster::status(&mut client, args.topic.as_deref(), args.output)
        }
        Command::Cluster(cluster::ClusterCommand::ElectLeaders(args)) => {
            elect::elect_leaders(&mut client, args.topic.as_deref())
        }
        Command::Group(GroupCommand::List(args)) => group::list(&mut client, args.output),
        Command::Group(GroupCommand::Describe(args)) => {
            group::describe(&mut client, &args.group, args.output)
        }
        Command::Group(GroupCommand::Delete(args)) => group::delete(&mut client, &args.group),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use fake_broker::FakeBroker;
    use kafka_protocol::messages::{ApiKey, MetadataResponse, RequestKind};

    #[test]
    fn run_dispatches_to_the_topic_command() {
        let broker = FakeBroker::start(&[(ApiKey::Metadata, 0, 12)], |request| {
            assert!(matches!(request, RequestKind::Metadata(m) if m.topics.is_none()));
            MetadataResponse::default().into()
        });
        let cli = Cli::try_parse_from([
            "strand",
            "--bootstrap",
            &broker.addr,
            "topic",
            "list",
            "--output",
            "json",
        ])
        .expect("valid command line");
        assert_eq!(run(&cli).expect("list"), "{\"topics\":[]}\n");
        assert_eq!(broker.finish().len(), 1);
    }
}
