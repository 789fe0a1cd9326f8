//! Run the replication simulation of `node/tests/raft_sim.rs` outside the test
//! harness: replay one seed with its trace, or sweep many.
//!
//! ```text
//! cargo run -p strand-node --example raft_sim -- --seed 1234 [--trace 400]
//! cargo run --release -p strand-node --example raft_sim -- --seeds 100000 [--start 0]
//! ```
//!
//! Exits 1 on the first seed that breaks a safety or liveness property, after
//! printing the tail of its trace.

#[allow(dead_code)]
#[path = "../tests/sim/mod.rs"]
mod sim;

use std::process::ExitCode;

fn flag(args: &[String], name: &str) -> Result<Option<u64>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => {
            let value = args
                .get(i + 1)
                .ok_or_else(|| format!("{name} needs a number"))?;
            value
                .parse()
                .map(Some)
                .map_err(|_| format!("{name} {value}: not a number"))
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = (|| -> Result<_, String> {
        if let Some(unknown) = args
            .iter()
            .step_by(2)
            .find(|a| !["--seed", "--trace", "--seeds", "--start"].contains(&a.as_str()))
        {
            return Err(format!(
                "unknown argument {unknown}: use --seed S [--trace LINES] or --seeds N [--start S]"
            ));
        }
        Ok((
            flag(&args, "--seed")?,
            flag(&args, "--trace")?.unwrap_or(400) as usize,
            flag(&args, "--seeds")?,
            flag(&args, "--start")?.unwrap_or(0),
        ))
    })();
    let (seed, trace, seeds, start) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("raft_sim: {e}");
            return ExitCode::from(2);
        }
    };
    let (first, count, lines) = match (seed, seeds) {
        (Some(s), _) => (s, 1, trace),
        (None, Some(n)) => (start, n, 0),
        (None, None) => {
            eprintln!("raft_sim: give --seed S to replay one seed, or --seeds N to sweep");
            return ExitCode::from(2);
        }
    };
    for s in first..first + count {
        let (result, sim) = sim::run_seed(s, lines);
        if lines > 0 {
            println!("{}", sim.trace_dump());
        }
        if let Err(violation) = result {
            if lines == 0 {
                println!("{}", sim::run_seed(s, 400).1.trace_dump());
            }
            println!("seed {s} FAILED: {violation}");
            return ExitCode::from(1);
        }
        if count == 1 {
            println!("seed {s} passed: {:?}", sim.stats);
        }
    }
    if count > 1 {
        println!("{count} seeds from {first} passed");
    }
    ExitCode::SUCCESS
}
