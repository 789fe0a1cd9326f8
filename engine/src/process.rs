//! Process-wide preparation for DMA I/O: locked memory for io_uring's registered
//! buffers.

/// What the locked-memory check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemlockReport {
    /// Soft RLIMIT_MEMLOCK after raising it to the hard limit, in bytes
    /// (u64::MAX when unlimited).
    pub soft_bytes: u64,
    pub hard_bytes: u64,
    /// The process may lock memory past the limit (CAP_IPC_LOCK, e.g. root).
    pub has_ipc_lock: bool,
    /// Bytes of locked memory the executors need for registered buffers.
    pub needed_bytes: u64,
}

impl MemlockReport {
    /// True when io_uring buffer registration will work.
    pub fn registration_ok(&self) -> bool {
        self.has_ipc_lock || self.soft_bytes >= self.needed_bytes
    }

    /// A message for the operator when registration will fail; None when it works.
    pub fn warning(&self) -> Option<String> {
        if self.registration_ok() {
            return None;
        }
        Some(format!(
            "locked memory limit (RLIMIT_MEMLOCK) is {} KiB but registered io_uring buffers \
             need {} KiB: glommio will silently fall back to unregistered buffers and DMA \
             I/O gets slower. Raise it: `ulimit -l unlimited` in the shell, \
             `LimitMEMLOCK=infinity` in the systemd unit, or `memlock` in \
             /etc/security/limits.conf",
            self.soft_bytes / 1024,
            self.needed_bytes / 1024
        ))
    }
}

/// glommio registers each executor's I/O memory with three rings (main, latency and
/// poll), and the kernel charges each registration.
pub fn memlock_needed_bytes(executors: usize, io_memory_bytes: usize) -> u64 {
    (executors as u64) * 3 * io_memory_bytes as u64
}

/// Raise the soft RLIMIT_MEMLOCK to the hard limit and report whether registered
/// buffers will work for `executors` executors of `io_memory_bytes` each.
pub fn raise_memlock(executors: usize, io_memory_bytes: usize) -> MemlockReport {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the properly sized `lim`.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } == 0;
    if got && lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the properly initialised `raised`.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            lim = raised;
        }
    }
    let to_bytes = |v: libc::rlim_t| {
        if v == libc::RLIM_INFINITY {
            u64::MAX
        } else {
            v
        }
    };
    MemlockReport {
        soft_bytes: to_bytes(lim.rlim_cur),
        hard_bytes: to_bytes(lim.rlim_max),
        has_ipc_lock: has_cap_ipc_lock(),
        needed_bytes: memlock_needed_bytes(executors, io_memory_bytes),
    }
}

/// CAP_IPC_LOCK (bit 14) in the effective capability set, from /proc/self/status.
fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_only_when_registration_cannot_work() {
        let short = MemlockReport {
            soft_bytes: 8 << 20,
            hard_bytes: 8 << 20,
            has_ipc_lock: false,
            needed_bytes: memlock_needed_bytes(2, 10 << 20),
        };
        let msg = short
            .warning()
            .expect("8 MiB cannot hold 60 MiB of buffers");
        assert!(msg.contains("RLIMIT_MEMLOCK") && msg.contains("LimitMEMLOCK"));
        assert!(MemlockReport {
            has_ipc_lock: true,
            ..short
        }
        .warning()
        .is_none());
        assert!(MemlockReport {
            soft_bytes: u64::MAX,
            ..short
        }
        .warning()
        .is_none());
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let r = raise_memlock(1, 1 << 20);
        assert_eq!(r.soft_bytes, r.hard_bytes);
    }
}
