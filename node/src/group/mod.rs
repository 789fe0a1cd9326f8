//! Consumer groups: Kafka's classic group protocol (JoinGroup/SyncGroup/Heartbeat/
//! LeaveGroup) and committed offsets.
//!
//! - [`coordinator`]: the sans-IO state machine of the groups of one offsets
//!   partition. Requests and ticks in (time passed in), actions out (replies, records
//!   to store). No I/O, no clock, no randomness: tests drive it deterministically.
//! - [`store`]: the records the coordinator keeps in `__consumer_offsets` (committed
//!   offsets and group metadata) and their replay.
//! - [`service`]: the I/O layer on the shard that owns an offsets partition: loads
//!   the partition's records when this node becomes its leader, carries out the
//!   actions (writes with acks=all, so offsets are replicated), ticks the timers.
//!
//! A group's coordinator is the leader of partition `partition_for(group)` of
//! `__consumer_offsets`, as in Kafka; FindCoordinator names that node.

pub mod coordinator;
pub mod service;
pub mod store;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The offsets partition of a group: Kafka's `abs(groupId.hashCode) % partitions`
/// (Java's String.hashCode over UTF-16 units), so a group lands where Kafka puts it.
pub fn partition_for(group: &str, partitions: u32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    ((h & 0x7fff_ffff) as u32 % partitions.max(1)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_kafka() {
        // Java: "my-group".hashCode() = -1906497762 → & 0x7fffffff % 50 = 36.
        assert_eq!(partition_for("my-group", 50), 36);
        assert_eq!(partition_for("my-group", 16), 14);
        assert_eq!(partition_for("", 50), 0);
        // A negative hash code is masked, not negated (Utils.abs).
        // "polygenelubricants".hashCode() == i32::MIN → masked to 0.
        assert_eq!(partition_for("polygenelubricants", 16), 0);
    }
}
