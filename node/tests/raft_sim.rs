//! The replication state machine under a deterministic simulation (issue 5), and
//! hand-written scenarios for the behaviours the simulation can only hit by chance.
//!
//! Random runs: `cargo test -p strand-node --test raft_sim` runs seeds
//! `0..2000` (both cluster sizes: even seeds 3 replicas, odd seeds 5).
//! `STRAND_SIM_SEEDS=N` runs `N` seeds, `STRAND_SIM_SEED_START=S` starts at `S`,
//! and `STRAND_SIM_SEED=S` replays one seed with a trace of its last events
//! (`STRAND_SIM_TRACE=LINES`, 400 by default). A failing seed prints itself and the
//! command that replays it: `cargo run -p strand-node --example raft_sim -- --seed S`
//! (`--seeds N [--start S]` sweeps).
//!
//! Section numbers cite the Raft paper and Ongaro's thesis.

mod sim;

use std::panic::{self, AssertUnwindSafe};
use std::time::Instant;

use sim::{disk_with, run_seed, Sim, Stats, ELECTION_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, MARKER};
use strand_node::replication::{
    Action, AppendOutcome, AppendRequest, AppendResponse, Config, ConflictHint, EntryId, HardState,
    Heartbeat, HeartbeatResponse, InstallSnapshot, LogTerms, Message, ProposeError, Raft,
    Recovered, RoleKind, TimeoutNow, VoteRequest, VoteResponse, INDEX_MAX, TERM_MAX,
};

const SEEDS_DEFAULT: u64 = 2000;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

fn replay_command(seed: u64) -> String {
    format!(
        "cargo run -p strand-node --example raft_sim -- --seed {seed}   (or STRAND_SIM_SEED={seed} \
         cargo test -p strand-node --test raft_sim random_seeds -- --nocapture)"
    )
}

/// Run seed `seed`; on a violation or a panic, print the seed, the tail of its
/// trace (from a second, identical run) and the replay command, then fail.
fn run_checked(seed: u64, trace_lines: usize) -> Stats {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| run_seed(seed, trace_lines)));
    match outcome {
        Ok((Ok(()), sim)) => {
            if trace_lines > 0 {
                eprintln!("{}", sim.trace_dump());
            }
            sim.stats
        }
        Ok((Err(violation), sim)) => {
            let trace = if trace_lines > 0 {
                sim.trace_dump()
            } else {
                let rerun = panic::catch_unwind(AssertUnwindSafe(|| run_seed(seed, 200)));
                rerun.map(|(_, sim)| sim.trace_dump()).unwrap_or_default()
            };
            eprintln!("{trace}");
            panic!(
                "simulation seed {seed} failed: {violation}\nreplay: {}",
                replay_command(seed)
            );
        }
        Err(cause) => {
            eprintln!(
                "simulation seed {seed} panicked\nreplay: {}",
                replay_command(seed)
            );
            panic::resume_unwind(cause);
        }
    }
}

/// The seeds of this part (tests run in parallel, so the seeds are split).
fn run_seeds(part: u64, parts: u64) {
    if let Some(seed) = env_u64("STRAND_SIM_SEED") {
        if part == 0 {
            let lines = env_u64("STRAND_SIM_TRACE").unwrap_or(400) as usize;
            let stats = run_checked(seed, lines);
            eprintln!("seed {seed} passed: {stats:?}");
        }
        return;
    }
    let count = env_u64("STRAND_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
    let start = env_u64("STRAND_SIM_SEED_START").unwrap_or(0);
    let began = Instant::now();
    let mut total = Stats::default();
    let mut runs = 0;
    // Pairs of seeds, so each part gets both cluster sizes.
    for seed in (start..start + count).filter(|s| (s / 2) % parts == part) {
        total.add(&run_checked(seed, 0));
        runs += 1;
    }
    eprintln!(
        "raft_sim part {part}: {runs} seeds from {start} in {:.1?}: {total:?}",
        began.elapsed()
    );
    if runs > 0 {
        // The faults must actually have happened, or the run proved little.
        assert!(total.crashes > 0 && total.truncations > 0 && total.snapshots_installed > 0);
        assert!(total.acked > 0 && total.leaders > 0);
    }
}

#[test]
fn random_seeds_part_0() {
    run_seeds(0, 2);
}

#[test]
fn random_seeds_part_1() {
    run_seeds(1, 2);
}

// --- hand-written scenarios ---

fn elect(sim: &mut Sim) -> usize {
    let elected = sim.run_until(20 * ELECTION_TIMEOUT_MS, |s| s.stable_leader().is_some());
    assert!(elected, "no leader: {:?}", sim.violation);
    sim.stable_leader().expect("a leader")
}

fn assert_safe(sim: &mut Sim) {
    sim.check_logs();
    assert_eq!(sim.violation, None);
}

fn all_committed_through(sim: &Sim, index: u64) -> bool {
    (0..sim.nodes.len()).all(|i| sim.is_up(i) && sim.raft(i).commit_index() >= index)
}

/// Raft §5.2, §5.4.2: one leader, followed by the others, whose first entry (the
/// leader-change marker of its term) commits everywhere.
#[test]
fn elects_one_leader_and_commits_its_term_marker() {
    for nodes in [3, 5] {
        let mut sim = Sim::new(1, nodes, None);
        let leader = elect(&mut sim);
        let term = sim.raft(leader).term();
        assert!(sim.run_until(1000, |s| all_committed_through(s, 1)));
        for i in 0..nodes {
            assert_eq!(sim.raft(i).leader(), Some(leader as u32 + 1));
            assert_eq!(sim.raft(i).term(), term);
            let first = sim.nodes[i].disk.get(1).expect("entry 1");
            assert_eq!(first.payload, MARKER | term);
        }
        assert_safe(&mut sim);
    }
}

/// Raft §5.3: a follower's entries that conflict with the leader's go, with all
/// after them; the conflict hint skips the whole divergent term.
#[test]
fn follower_truncates_a_divergent_tail() {
    let leader_hs = HardState {
        term: 2,
        voted_for: Some(1),
    };
    let agreed = [(1, 10), (1, 11), (2, 12), (2, 13)];
    let stale = [(1, 10), (1, 11), (1, 20), (1, 21), (1, 22)];
    let disks = vec![
        disk_with(leader_hs, 2, &agreed),
        disk_with(leader_hs, 2, &agreed),
        disk_with(
            HardState {
                term: 1,
                voted_for: None,
            },
            2,
            &stale,
        ),
    ];
    let mut sim = Sim::with_disks(2, disks, None);
    let leader = elect(&mut sim);
    // Node 3's log ends in an older term, so it cannot win (§5.4.1).
    assert_ne!(leader, 2);
    assert!(sim.run_until(2000, |s| s.converged()));
    assert!(sim.stats.truncations >= 1);
    let payloads: Vec<u64> = sim.nodes[2].disk.entries().map(|(_, _, p)| p).collect();
    let expected: Vec<u64> = sim.nodes[leader]
        .disk
        .entries()
        .map(|(_, _, p)| p)
        .collect();
    assert_eq!(payloads, expected);
    assert!(!payloads.contains(&20) && payloads.contains(&13));
    assert_safe(&mut sim);
}

/// Raft §5.4.2 and its Figure 8: a leader must not commit an entry of an earlier
/// term by counting replicas, because a replica whose log ends in a later term can
/// still win an election and overwrite it. Here S1 (term 4) brings S3 and S4 up to
/// date with its term-2 entries; a quorum holds them durably, but S1 crashes before
/// they get its term-4 marker, and S5 (whose log ends in term 3) wins term 5 and
/// overwrites them. That is only safe because S1 never published them as committed.
#[test]
fn leader_commits_earlier_terms_only_through_its_own() {
    let term2: Vec<(u64, u64)> = (2..=10).map(|i| (2, 100 + i)).collect();
    let s1_log: Vec<(u64, u64)> = [(1, 1)].into_iter().chain(term2).collect();
    let hs = |term, voted_for| HardState { term, voted_for };
    let disks = vec![
        disk_with(hs(3, None), 1, &s1_log),
        disk_with(hs(2, Some(1)), 1, &s1_log),
        disk_with(hs(3, Some(5)), 1, &[(1, 1)]),
        disk_with(hs(3, Some(5)), 1, &[(1, 1)]),
        disk_with(hs(3, Some(5)), 1, &[(1, 1), (3, 300)]),
    ];
    let (s1, s2, s3, s4, s5) = (0, 1, 2, 3, 4);
    let mut sim = Sim::with_disks(9, disks, None);
    sim.enable_trace(200);
    sim.isolate(s2);
    sim.isolate(s5);
    // Only S1 can win: S3 and S4 lack its entries, S2 and S5 are cut off.
    assert_eq!(elect(&mut sim), s1);
    assert_eq!(sim.raft(s1).term(), 4);
    // Let S3 and S4 take the first append of term-2 entries (8 per append), then
    // drop whatever else S1 sends them: they never see the term-4 marker. Their
    // acknowledgements still reach S1.
    let caught_up = |s: &Sim, i: usize| s.nodes[i].disk.last_index() >= 9;
    let mut cut_off = [false; 5];
    while !(cut_off[s3] && cut_off[s4]) {
        let next = |s: &Sim| [s3, s4].iter().any(|&i| !cut_off[i] && caught_up(s, i));
        assert!(sim.run_until(1000, next));
        for i in [s3, s4] {
            if !cut_off[i] && caught_up(&sim, i) {
                sim.cut(s1, i);
                cut_off[i] = true;
            }
        }
    }
    assert!(sim.run_until(500, |s| s.nodes[s3].disk.durable_index() >= 9
        && s.nodes[s4].disk.durable_index() >= 9));
    sim.run_for(100);
    assert!(
        sim.raft(s1).commit_index() < 9,
        "S1 committed term-2 entries by counting"
    );
    sim.crash(s1);
    sim.heal_network();
    sim.isolate(s2);
    let s5_won = sim.run_until(40 * ELECTION_TIMEOUT_MS, |s| s.stable_leader() == Some(s5));
    assert!(s5_won, "{:?}\n{}", sim.violation, sim.trace_dump());
    assert!(sim.run_until(1000, |s| s.nodes[s3]
        .disk
        .get(2)
        .is_some_and(|e| e.term == 3)));
    assert_safe(&mut sim);
    sim.heal_network();
    sim.restart(s1);
    assert!(sim.run_until(5000, |s| s.converged()));
    assert_safe(&mut sim);
}

/// Thesis §9.6: a replica cut off from the others keeps asking for pre-votes, but
/// never raises its term, so when it returns the leader carries on undisturbed.
#[test]
fn pre_vote_keeps_a_returning_replica_from_deposing_the_leader() {
    let mut sim = Sim::new(3, 3, None);
    let leader = elect(&mut sim);
    let term = sim.raft(leader).term();
    let cut_off = (leader + 1) % 3;
    sim.isolate(cut_off);
    sim.run_for(20 * ELECTION_TIMEOUT_MS);
    assert_eq!(
        sim.raft(cut_off).term(),
        term,
        "a pre-vote must not raise the term"
    );
    assert_ne!(sim.raft(cut_off).role(), RoleKind::Leader);
    assert_eq!(sim.stable_leader(), Some(leader));
    sim.heal_network();
    sim.run_for(10 * ELECTION_TIMEOUT_MS);
    assert_eq!(sim.stable_leader(), Some(leader));
    for i in 0..3 {
        assert_eq!(sim.raft(i).term(), term);
        assert_eq!(sim.raft(i).leader(), Some(leader as u32 + 1));
    }
    assert_safe(&mut sim);
}

/// Thesis §6.2 (CheckQuorum): a leader that stops hearing from a quorum steps down
/// within two election timeouts, and what it accepted meanwhile is never
/// acknowledged; the others elect a new leader.
#[test]
fn leader_without_a_quorum_steps_down() {
    let mut sim = Sim::new(4, 3, None);
    let leader = elect(&mut sim);
    let term = sim.raft(leader).term();
    sim.isolate(leader);
    let write = sim.writes_len();
    assert!(sim.propose(leader).is_ok());
    sim.run_for(2 * ELECTION_TIMEOUT_MS + HEARTBEAT_INTERVAL_MS);
    assert_ne!(sim.raft(leader).role(), RoleKind::Leader);
    let new_leader = elect(&mut sim);
    assert_ne!(new_leader, leader);
    assert!(sim.raft(new_leader).term() > term);
    sim.heal_network();
    assert!(sim.run_until(2000, |s| s.converged()));
    assert!(!sim.acked(write));
    assert_safe(&mut sim);
}

/// Thesis §3.10: the leader stops taking writes, brings the target up to date and
/// sends it TimeoutNow; the target wins the next term without waiting for an
/// election timeout.
#[test]
fn leadership_transfer_hands_over_before_an_election_timeout() {
    let mut sim = Sim::new(5, 3, None);
    let leader = elect(&mut sim);
    let term = sim.raft(leader).term();
    for _ in 0..5 {
        assert!(sim.propose(leader).is_ok());
    }
    let target = (leader + 1) % 3;
    let began = sim.now_ms;
    assert!(sim.transfer(leader, target as u32 + 1));
    assert!(matches!(
        sim.propose(leader),
        Err(ProposeError::TransferInProgress { .. })
    ));
    let moved = sim.run_until(ELECTION_TIMEOUT_MS, |s| s.stable_leader() == Some(target));
    assert!(
        moved,
        "transfer did not complete within an election timeout"
    );
    assert!(sim.now_ms - began < ELECTION_TIMEOUT_MS);
    assert_eq!(sim.raft(target).term(), term + 1);
    assert!(sim.run_until(2000, |s| s.converged()));
    assert_safe(&mut sim);
}

/// Raft §7 with the log as the state: a replica that was down while the leader's
/// retention removed the entries it lacks gets the leader's log as a snapshot range
/// (whole segments), then the rest by appends.
#[test]
fn far_behind_replica_catches_up_from_a_snapshot() {
    let mut sim = Sim::new(6, 3, None);
    let leader = elect(&mut sim);
    let behind = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    sim.crash(behind);
    for _ in 0..60 {
        assert!(sim.propose(leader).is_ok());
        sim.run_for(2);
    }
    assert!(sim.run_until(2000, |s| (0..60).all(|w| s.acked(w))));
    let commit = sim.raft(leader).commit_index();
    // The leader sees the partition under-replicated: one follower is behind.
    let lagging = |s: &Sim| {
        let commit = s.raft(leader).commit_index();
        let followers = s.raft(leader).followers();
        assert_eq!(followers.len(), 2);
        followers.iter().filter(|f| f.match_index < commit).count()
    };
    assert_eq!(lagging(&sim), 1);
    sim.retention(leader, commit + 1);
    sim.retention(other, sim.raft(other).commit_index() + 1);
    sim.restart(behind);
    assert!(sim.run_until(3000, |s| s.converged()));
    assert!(sim.stats.snapshots_installed >= 1);
    assert!(sim.nodes[behind].disk.base().index >= commit);
    assert!(sim.raft(behind).commit_index() >= commit);
    // The leader learns it from the follower's next acknowledgement.
    assert!(sim.run_until(500, |s| lagging(s) == 0));
    // And it keeps up afterwards.
    assert!(sim.propose(leader).is_ok());
    assert!(sim.run_until(2000, |s| s.converged() && s.acked(60)));
    assert_safe(&mut sim);
}

/// No acknowledgement before durable: an entry commits only once a quorum has
/// synced it, and the leader publishes it only once it synced it itself.
#[test]
fn nothing_commits_before_a_quorum_synced_it() {
    let mut sim = Sim::new(7, 3, None);
    let leader = elect(&mut sim);
    assert!(sim.run_until(1000, |s| all_committed_through(s, 1)));
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    sim.nodes[a].hold_syncs = true;
    sim.nodes[b].hold_syncs = true;
    let index = sim.propose(leader).expect("leader takes the write");
    sim.run_for(500);
    assert!(!sim.acked(0));
    assert!(sim.raft(leader).commit_index() < index);
    sim.nodes[a].hold_syncs = false;
    assert!(sim.run_until(200, |s| s.acked(0)));
    // Followers synced, the leader did not: the leader does not publish it.
    sim.nodes[b].hold_syncs = false;
    sim.nodes[leader].hold_syncs = true;
    let index = sim.propose(leader).expect("leader takes the write");
    assert!(
        sim.run_until(500, |s| s.nodes[a].disk.durable_index() >= index
            && s.nodes[b].disk.durable_index() >= index)
    );
    sim.run_for(200);
    assert!(!sim.acked(1));
    assert!(sim.raft(leader).commit_index() < index);
    sim.nodes[leader].hold_syncs = false;
    assert!(sim.run_until(200, |s| s.acked(1)));
    assert_safe(&mut sim);
}

/// The commit checkpoint is written lazily, off the acknowledgement's path: a
/// replica restarts from it, possibly well behind what it published, and readers
/// still never see less than before. The old leader comes back with an old
/// checkpoint, and once it leads again it serves reads only at or past its old
/// high watermark (the simulation checks every step of that too).
#[test]
fn a_replica_restarted_from_an_old_checkpoint_never_shows_less() {
    let mut sim = Sim::new(8, 3, None);
    let leader = elect(&mut sim);
    for _ in 0..10 {
        assert!(sim.propose(leader).is_ok());
    }
    assert!(sim.run_until(1000, |s| s.converged() && s.acked(9)));
    let commit = sim.raft(leader).commit_index();
    assert!(sim.raft(leader).serves_reads());
    // The last checkpoint it wrote was long ago.
    sim.nodes[leader].disk.commit_checkpoint = 1;
    sim.crash(leader);
    sim.restart(leader);
    assert_eq!(sim.raft(leader).commit_index(), 1);
    assert!(!sim.raft(leader).serves_reads());
    assert!(sim.run_until(3000, |s| s.converged()));
    let now = sim.stable_leader().expect("a leader");
    let id = sim.nodes[leader].id;
    if now != leader {
        assert!(sim.transfer(now, id));
    }
    assert!(sim.run_until(3000, |s| s.converged()
        && s.stable_leader() == Some(leader)
        && s.raft(leader).serves_reads()));
    assert!(sim.raft(leader).commit_index() >= commit);
    for i in 0..3 {
        assert!(sim.raft(i).commit_index() >= commit);
    }
    assert_safe(&mut sim);
}

/// Not in Raft's model, but it happens: a follower's disk is replaced (its log and
/// hard state are gone). The leader counted it durable far ahead; it must start the
/// follower over from where its log now ends, not wait forever for entries it will
/// never report. Nothing committed is lost (the other two hold it).
#[test]
fn a_follower_that_lost_its_disk_catches_up_from_scratch() {
    let mut sim = Sim::new(9, 3, None);
    let leader = elect(&mut sim);
    for _ in 0..10 {
        assert!(sim.propose(leader).is_ok());
    }
    assert!(sim.run_until(1000, |s| s.converged() && s.acked(9)));
    let follower = (leader + 1) % 3;
    let commit = sim.raft(leader).commit_index();
    sim.crash(follower);
    sim.nodes[follower].disk = sim::Disk::default();
    sim.restart(follower);
    assert_eq!(sim.raft(follower).log().last_index(), 0);
    for _ in 0..5 {
        assert!(sim.propose(leader).is_ok());
    }
    assert!(
        sim.run_until(3000, |s| s.converged()
            && s.raft(follower).commit_index() >= commit + 5),
        "the replaced follower never caught up: its log ends at {}",
        sim.raft(follower).log().last_index()
    );
    assert_safe(&mut sim);
}

// --- single replicas, message by message ---

/// A replica of the group `[1, 2, 3]` whose disk holds entries of `terms` from
/// index 1.
fn replica(id: u32, hard_state: HardState, commit_index: u64, terms: &[u64]) -> Raft {
    let ids = terms.iter().enumerate().map(|(k, &term)| EntryId {
        index: k as u64 + 1,
        term,
    });
    let log = LogTerms::from_entries(EntryId::ZERO, ids).expect("valid log");
    let recovered = Recovered {
        hard_state,
        commit_index,
        log,
    };
    Raft::new(Config::new(id, vec![1, 2, 3]), recovered, 1, 0).expect("valid replica")
}

fn sent_to(out: &[Action], to: u32) -> Vec<&Message> {
    out.iter()
        .filter_map(|a| match a {
            Action::Send { to: t, msg } if *t == to => Some(msg),
            _ => None,
        })
        .collect()
}

/// Raft §5.4.1 (the election restriction): a vote goes only to a candidate whose
/// log is at least as up to date, compared by last term, then length; and the vote
/// is written before it is sent (§5.2).
#[test]
fn votes_only_for_a_candidate_whose_log_is_as_up_to_date() {
    let hs = HardState {
        term: 2,
        voted_for: None,
    };
    let mut voter = replica(1, hs, 2, &[1, 1, 2, 2, 2]);
    let now = 10 * ELECTION_TIMEOUT_MS;
    let mut out = Vec::new();
    for msg in [
        Message::PreVote(VoteRequest {
            term: 3,
            last: EntryId { index: 4, term: 2 },
            transfer: false,
        }),
        Message::Vote(VoteRequest {
            term: 3,
            last: EntryId { index: 4, term: 2 },
            transfer: false,
        }),
        Message::Vote(VoteRequest {
            term: 3,
            last: EntryId { index: 9, term: 1 },
            transfer: false,
        }),
    ] {
        voter.step(now, 2, msg, &mut out);
    }
    let answers = sent_to(&out, 2);
    assert_eq!(answers.len(), 3);
    assert!(answers.iter().all(|m| matches!(
        m,
        Message::PreVoteResponse(VoteResponse { granted: false, .. })
            | Message::VoteResponse(VoteResponse { granted: false, .. })
    )));
    assert_eq!(voter.hard_state().voted_for, None);

    out.clear();
    let longer = VoteRequest {
        term: 3,
        last: EntryId { index: 5, term: 2 },
        transfer: false,
    };
    voter.step(now, 3, Message::Vote(longer), &mut out);
    assert_eq!(
        voter.hard_state(),
        HardState {
            term: 3,
            voted_for: Some(3)
        }
    );
    let persisted = out.iter().position(|a| {
        matches!(
            a,
            Action::PersistHardState(HardState {
                term: 3,
                voted_for: Some(3)
            })
        )
    });
    let granted = out.iter().position(|a| {
        matches!(
            a,
            Action::Send {
                to: 3,
                msg: Message::VoteResponse(VoteResponse { granted: true, .. })
            }
        )
    });
    assert!(
        matches!((persisted, granted), (Some(p), Some(g)) if p < g),
        "{out:?}"
    );
}

/// Raft §7: a snapshot whose last entry the follower already holds (a duplicate,
/// or one overtaken by appends) leaves the log alone; one it does not hold
/// replaces the log, durably, before the answer goes out.
#[test]
fn snapshot_replaces_the_log_only_when_the_log_lacks_its_end() {
    let hs = HardState {
        term: 3,
        voted_for: None,
    };
    let mut follower = replica(2, hs, 2, &[1, 1, 2, 2, 3, 3]);
    let mut out = Vec::new();
    let range = |base: EntryId, terms: &[u64]| {
        let ids = terms.iter().enumerate().map(|(k, &term)| EntryId {
            index: base.index + k as u64 + 1,
            term,
        });
        LogTerms::from_entries(base, ids).expect("valid range")
    };
    let held = range(EntryId::ZERO, &[1, 1, 2, 2]);
    let snapshot = InstallSnapshot {
        term: 3,
        commit_index: 4,
        log: held,
    };
    follower.step(0, 1, Message::InstallSnapshot(snapshot), &mut out);
    assert!(
        !out.iter()
            .any(|a| matches!(a, Action::InstallSnapshot { .. })),
        "{out:?}"
    );
    assert_eq!(follower.log().last(), EntryId { index: 6, term: 3 });
    assert!(sent_to(&out, 1).iter().any(|m| matches!(
        m,
        Message::AppendResponse(AppendResponse {
            outcome: AppendOutcome::Accepted {
                matching_index: 4..,
                ..
            },
            ..
        })
    )));

    out.clear();
    let newer = range(EntryId { index: 7, term: 3 }, &[3, 3]);
    let snapshot = InstallSnapshot {
        term: 3,
        commit_index: 9,
        log: newer.clone(),
    };
    follower.step(1, 1, Message::InstallSnapshot(snapshot), &mut out);
    let installed = out
        .iter()
        .position(|a| matches!(a, Action::InstallSnapshot { log } if *log == newer));
    let answered = out.iter().position(|a| {
        matches!(
            a,
            Action::Send {
                msg: Message::AppendResponse(AppendResponse {
                    outcome: AppendOutcome::Accepted {
                        durable_index: 9,
                        ..
                    },
                    ..
                }),
                ..
            }
        )
    });
    assert!(
        matches!((installed, answered), (Some(i), Some(a)) if i < a),
        "{out:?}"
    );
    assert_eq!(follower.log().base(), EntryId { index: 7, term: 3 });
    assert_eq!(follower.commit_index(), 9);
}

// --- input that is not to be trusted ---

fn pick<T: Copy>(rng: &mut fastrand::Rng, choices: &[T]) -> T {
    choices[rng.usize(0..choices.len())]
}

fn garbage_message(rng: &mut fastrand::Rng, term: u64) -> Message {
    let terms = [
        0,
        1,
        term.saturating_sub(1),
        term,
        term + 1,
        term + 7,
        TERM_MAX,
        TERM_MAX + 1,
        u64::MAX,
    ];
    let indexes = [0, 1, 2, 3, 5, 9, 40, INDEX_MAX, INDEX_MAX + 1, u64::MAX];
    let mut t = || pick(rng, &terms);
    let (t1, t2, t3) = (t(), t(), t());
    let i1 = pick(rng, &indexes);
    let i2 = pick(rng, &indexes);
    let entry = EntryId {
        index: i1,
        term: t2,
    };
    let vote = VoteRequest {
        term: t1,
        last: entry,
        transfer: rng.bool(),
    };
    match rng.u32(0..10) {
        0 => Message::PreVote(vote),
        1 => Message::Vote(vote),
        2 => Message::PreVoteResponse(VoteResponse {
            term: t1,
            granted: rng.bool(),
        }),
        3 => Message::VoteResponse(VoteResponse {
            term: t1,
            granted: rng.bool(),
        }),
        4 => {
            let contiguous = rng.bool();
            let entries = (0..rng.usize(0..6))
                .map(|k| EntryId {
                    index: if contiguous {
                        i1.wrapping_add(k as u64 + 1)
                    } else {
                        pick(rng, &indexes)
                    },
                    term: if contiguous {
                        t2.max(t3)
                    } else {
                        pick(rng, &terms)
                    },
                })
                .collect();
            Message::Append(AppendRequest {
                term: t1,
                prev: entry,
                entries,
                commit_index: i2,
            })
        }
        5 => Message::AppendResponse(AppendResponse {
            term: t1,
            outcome: if rng.bool() {
                AppendOutcome::Accepted {
                    matching_index: i1,
                    durable_index: i2,
                }
            } else {
                AppendOutcome::Rejected {
                    prev_index: i1,
                    hint: ConflictHint {
                        term: rng.bool().then_some(t2),
                        index: i2,
                    },
                }
            },
        }),
        6 => Message::Heartbeat(Heartbeat {
            term: t1,
            commit_index: i2,
        }),
        7 => Message::HeartbeatResponse(HeartbeatResponse { term: t1 }),
        8 => {
            let base = EntryId {
                index: i1.min(60),
                term: 1,
            };
            let len = rng.u64(0..5);
            let ids = (1..=len).map(|k| EntryId {
                index: base.index + k,
                term: t3.clamp(1, TERM_MAX),
            });
            let log = LogTerms::from_entries(base, ids).unwrap_or_else(|_| LogTerms::empty());
            Message::InstallSnapshot(InstallSnapshot {
                term: t1,
                commit_index: i2,
                log,
            })
        }
        _ => Message::TimeoutNow(TimeoutNow { term: t1 }),
    }
}

/// Messages are input: out-of-range terms and indexes, non-contiguous entries,
/// answers to questions never asked, from members and strangers. None may panic
/// (the state machine's debug assertions run after every call), and none may make a
/// replica hold or publish what it should not.
#[test]
fn garbage_messages_are_refused_without_panicking() {
    for seed in 0..300u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let config = Config::new(1, vec![1, 2, 3]);
        let mut raft = Raft::new(config, Recovered::fresh(), seed, 0).expect("valid config");
        let mut now = 0;
        let mut out = Vec::new();
        for _ in 0..400 {
            out.clear();
            match rng.u32(0..10) {
                0 => {
                    now += rng.u64(0..400);
                    raft.tick(now, &mut out);
                }
                1 => {
                    let index = pick(&mut rng, &[0, 1, 2, 5, u64::MAX]);
                    let term = pick(&mut rng, &[0, 1, raft.term(), u64::MAX]);
                    raft.persisted(index, term, &mut out);
                }
                2 => {
                    let _ = raft.propose(now, &mut out);
                }
                3 => {
                    // Votes from both peers for the campaign in progress, so the
                    // leader paths are exercised too.
                    let term = raft.term() + 1;
                    for from in [2, 3] {
                        let granted = VoteResponse {
                            term,
                            granted: true,
                        };
                        raft.step(now, from, Message::PreVoteResponse(granted), &mut out);
                        let granted = VoteResponse {
                            term: raft.term(),
                            granted: true,
                        };
                        raft.step(now, from, Message::VoteResponse(granted), &mut out);
                    }
                }
                _ => {
                    let from = rng.u32(0..5);
                    let msg = garbage_message(&mut rng, raft.term());
                    raft.step(now, from, msg, &mut out);
                }
            }
            assert!(raft.commit_index() <= raft.persisted_index());
            assert!(raft.persisted_index() <= raft.log().last_index());
            assert!(raft.term() <= TERM_MAX);
        }
        assert!(raft.counters().invalid > 0);
    }
}
