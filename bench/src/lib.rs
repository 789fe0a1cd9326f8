//! `strand-bench`: a Kafka load generator. It speaks the Kafka protocol itself (the
//! `kafka-protocol` codecs), so it benchmarks Strand or any Kafka-compatible cluster.
//!
//! Code map: `settings` (the workload), `cluster` (topics and leaders), `connection`
//! (pipelined broker connections), `producer` and `consumer` (the workers), `recorder`
//! (histograms and counters the workers fill), `run` (one run: workers, progress line,
//! results), `report` (.hgrm, interval logs, plot), `summary` (table and JSON),
//! `embedded` (a node in this process), `suite` (the standard scenarios), `machine`.

pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod embedded;
pub mod machine;
pub mod producer;
pub mod recorder;
pub mod report;
pub mod run;
pub mod settings;
pub mod suite;
pub mod summary;

/// How a command ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Done,
    /// Ctrl-C: the files hold what was measured until then.
    Interrupted,
}
