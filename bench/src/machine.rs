//! The machine a run happened on, for summary.json: figures are only comparable
//! between runs on like machines.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub hostname: String,
    pub kernel: String,
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub memory_bytes: u64,
    /// The git revision strand-bench was built from (`-dirty` with local changes).
    pub git_revision: String,
    pub bench_version: String,
}

impl Machine {
    pub fn this() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned())
        };
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            hostname: read("/proc/sys/kernel/hostname"),
            kernel: read("/proc/sys/kernel/osrelease"),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".to_owned()),
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: field(&meminfo, "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kib| kib * 1024),
            git_revision: env!("STRAND_GIT_REVISION").to_owned(),
            bench_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The value of the first `name: value` line of a /proc file.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_machine() {
        let m = Machine::this();
        assert!(m.logical_cpus >= 1);
        assert!(m.memory_bytes > 0, "MemTotal from /proc/meminfo");
        assert_ne!(m.kernel, "unknown");
        assert!(!m.git_revision.is_empty());
    }

    #[test]
    fn field_takes_the_first_match() {
        let text = "model name\t: A\nmodel name\t: B\nMemTotal:  100 kB\n";
        assert_eq!(field(text, "model name").as_deref(), Some("A"));
        assert_eq!(field(text, "MemTotal").as_deref(), Some("100 kB"));
        assert_eq!(field(text, "nope"), None);
    }
}
