//! The commit checkpoint of one shard: the commit index of every group the shard
//! hosts, written lazily (off the acknowledgement's path, see
//! `crate::replication`). A restarted replica starts from it rather than from zero,
//! so a follower's high watermark and the controller's applied state come back at
//! once; it may be a little older than what the replica had published, which loses
//! nothing: commits are durable on a quorum, and a leader serves reads only once its
//! commit is past everything shown before.
//!
//! One file write and one fdatasync cover every group that advanced since the last
//! round. Two files are written in turn, each stamped with a sequence
//! number and a CRC32C, so a write torn by a crash leaves the other one readable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use glommio::io::BufferedFile;
use serde::{Deserialize, Serialize};

use crate::replication::Index;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Contents {
    seq: u64,
    commits: BTreeMap<u64, Index>,
}

/// The two files of shard `shard`'s checkpoint.
pub fn paths(data_dir: &Path, shard: usize) -> [PathBuf; 2] {
    [0, 1].map(|slot| data_dir.join(format!("raft-commit-{shard}.{slot}")))
}

fn parse(bytes: &[u8]) -> Option<Contents> {
    let (crc, body) = bytes.split_first_chunk::<4>()?;
    let len = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let body = &body[..len];
    (crc32c::crc32c(body) == u32::from_le_bytes(*crc))
        .then(|| serde_json::from_slice(body).ok())
        .flatten()
}

/// The newest intact checkpoint (empty if none).
pub fn load(data_dir: &Path, shard: usize) -> (u64, BTreeMap<u64, Index>) {
    paths(data_dir, shard)
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .filter_map(|b| parse(&b))
        .max_by_key(|c| c.seq)
        .map_or((0, BTreeMap::new()), |c| (c.seq, c.commits))
}

/// The writer: holds the latest commit of every group and writes them all out.
#[derive(Debug)]
pub struct Checkpoint {
    files: [BufferedFile; 2],
    seq: u64,
    commits: BTreeMap<u64, Index>,
}

impl Checkpoint {
    pub async fn open(data_dir: &Path, shard: usize) -> std::io::Result<Self> {
        let (seq, commits) = load(data_dir, shard);
        let [a, b] = paths(data_dir, shard);
        let open = |p: PathBuf| async move {
            glommio::io::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .buffered_open(&p)
                .await
        };
        let files = [
            open(a)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            open(b)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        ];
        Ok(Checkpoint {
            files,
            seq,
            commits,
        })
    }

    /// Every group's checkpointed commit.
    pub fn commits(&self) -> &BTreeMap<u64, Index> {
        &self.commits
    }

    /// The recovered commit index of `group` (0 if never checkpointed).
    pub fn commit_of(&self, group: u64) -> Index {
        self.commits.get(&group).copied().unwrap_or(0)
    }

    pub fn forget(&mut self, group: u64) {
        self.commits.remove(&group);
    }

    /// Record `updates` and make the whole table durable.
    pub async fn write(&mut self, updates: &[(u64, Index)]) -> std::io::Result<()> {
        for &(group, index) in updates {
            let c = self.commits.entry(group).or_default();
            *c = (*c).max(index);
        }
        self.seq += 1;
        let body = serde_json::to_vec(&Contents {
            seq: self.seq,
            commits: self.commits.clone(),
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut bytes = Vec::with_capacity(body.len() + 5);
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        // A shorter table than the last one in this file leaves old bytes behind
        // it; the terminator ends the body before them.
        bytes.push(0);
        let file = &self.files[(self.seq % 2) as usize];
        file.write_at(bytes, 0)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        file.fdatasync()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_intact_file_wins_and_a_torn_one_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut c = Checkpoint::open(&d, 0).await.expect("open");
                c.write(&[(7, 3), (9, 1)]).await.expect("write");
                c.write(&[(7, 5)]).await.expect("write");
                let (seq, commits) = load(&d, 0);
                assert_eq!(seq, 2);
                assert_eq!(commits.get(&7), Some(&5));
                assert_eq!(commits.get(&9), Some(&1));
                drop(c);
                // Reopened (as after a restart), it goes on writing.
                let mut c = Checkpoint::open(&d, 0).await.expect("reopen");
                assert_eq!(c.commit_of(7), 5);
                c.write(&[(9, 2)]).await.expect("write after reopen");
                assert_eq!(load(&d, 0), (3, BTreeMap::from([(7, 5), (9, 2)])));
                c.write(&[(9, 1)]).await.expect("write");
                assert_eq!(load(&d, 0).1.get(&9), Some(&2), "commits never go back");
                drop(c);
                // Tear the newest file (seq 4, slot 0): the older one is read.
                let newest = &paths(&d, 0)[0];
                let mut bytes = std::fs::read(newest).expect("read");
                bytes[6] ^= 0xff;
                std::fs::write(newest, bytes).expect("write");
                assert_eq!(load(&d, 0), (3, BTreeMap::from([(7, 5), (9, 2)])));
            })
            .expect("executor")
            .join()
            .expect("join");
    }
}
