//! One daemon per network namespace, and a restart that waits for a killed predecessor.
//!
//! The lock is an abstract Unix socket. Abstract names live in the network namespace, so two
//! daemons in two lab namespaces do not collide while two in the same one do; and the kernel
//! releases the name when the holder dies, even by SIGKILL, so there is no stale lock file to
//! clean. A second daemon connects to the name to learn the holder's pid (`SO_PEERCRED`).
//!
//! A killed daemon does not let go at once. Its threads leave the kernel one by one: an io_uring
//! worker in the middle of an `fdatasync` finishes it first (on a busy ext4 that is a journal
//! commit: `jbd2_log_wait_commit`, measured up to seconds while other processes write), then the
//! last thread closes every file, running the releases in reverse order of descriptor number —
//! TCX and XDP links (an RCU grace period each), sockets, maps — and the lock, taken first,
//! lowest-numbered, goes last. That order is what we want: when the name is free, the old
//! listeners and the old XDP program (one per interface) are gone too. So a supervisor that
//! restarts the daemon at once must not be refused: a holder that is dying — SIGKILL pending for
//! its thread group (`ShdPnd`), `PF_EXITING`, or a zombie leader whose threads are still
//! exiting — is waited for, up to [`DYING_WAIT`], with one log line; a live holder is refused
//! as before. The holder's pid is learnt once per holder, with a non-blocking connect: the
//! lock never accepts, so connecting in a loop would fill its backlog.
use std::{
    os::{
        fd::AsRawFd as _,
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixListener},
    },
    time::{Duration, Instant},
};

use nix::sys::socket::{
    self, AddressFamily, SockFlag, SockType, UnixAddr, getsockopt, sockopt::PeerCredentials,
};
use thiserror::Error;
use tracing::{info, warn};

const LOCK_NAME: &[u8] = b"velocache-daemon";

/// How long a new daemon waits for a dying one to let go of the lock.
pub const DYING_WAIT: Duration = Duration::from_secs(30);

/// How often the lock is tried again while a dying holder exits.
const POLL: Duration = Duration::from_millis(10);

/// `PF_EXITING` in `/proc/PID/stat`'s flags (include/linux/sched.h).
const PF_EXITING: u64 = 0x4;

/// The lock could not be taken.
#[derive(Debug, Error)]
pub enum InstanceError {
    /// Another daemon holds it.
    #[error(
        "another velocache daemon is already running in this network namespace{}; stop it first (`velocache service stop` or `systemctl stop velocache`)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    AlreadyRunning {
        /// The other daemon's pid, when it could be learned.
        pid: Option<i32>,
    },
    /// A killed daemon still held the lock when the wait ran out.
    #[error(
        "the previous velocache daemon (pid {pid}) was killed but has not finished exiting after {} s (a thread stuck in the kernel, e.g. on a hung disk?)",
        waited.as_secs()
    )]
    StillExiting {
        /// The dying daemon's pid.
        pid: i32,
        /// How long we waited.
        waited: Duration,
    },
    /// The socket could not be created.
    #[error("cannot take the instance lock: {0}")]
    Io(#[source] std::io::Error),
}

/// Held for the daemon's lifetime; dropping it releases the lock.
pub struct InstanceLock {
    _listener: UnixListener,
}

/// What the lock's holder is doing, as `/proc` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// Running (or stopped, or gracefully shutting down): a real second instance.
    Alive,
    /// On its way out: it will release the lock by itself.
    Dying,
    /// No such process (any more), or unreadable.
    Gone,
}

impl InstanceLock {
    /// Take the lock, waiting up to [`DYING_WAIT`] for a killed daemon to finish exiting; fail
    /// at once if a live one holds it.
    pub async fn acquire() -> Result<Self, InstanceError> {
        Self::acquire_named(LOCK_NAME, DYING_WAIT).await
    }

    async fn acquire_named(name: &[u8], wait: Duration) -> Result<Self, InstanceError> {
        let addr = SocketAddr::from_abstract_name(name).map_err(InstanceError::Io)?;
        let started = Instant::now();
        // The holder we are waiting for (learnt once), and whether that was logged.
        let mut waiting: Option<i32> = None;
        let mut unknown_tries = 0;
        loop {
            let err = match UnixListener::bind_addr(&addr) {
                Ok(listener) => {
                    if let Some(pid) = waiting {
                        info!(
                            pid,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "the previous daemon has exited; instance lock taken"
                        );
                    }
                    return Ok(InstanceLock {
                        _listener: listener,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => e,
                Err(e) => return Err(InstanceError::Io(e)),
            };
            drop(err);
            let state = waiting.map(holder_state);
            let pid = match (waiting, state) {
                // Still the dying holder we know: just wait.
                (Some(pid), Some(Holder::Dying)) => pid,
                // First refusal, or the holder we knew is gone and someone holds it now.
                _ => match holder_pid(name) {
                    Some(pid) => pid,
                    None => {
                        // Released between our bind and connect, or a holder in another pid
                        // namespace: try a few times before calling it a live one.
                        unknown_tries += 1;
                        if unknown_tries > 5 {
                            return Err(InstanceError::AlreadyRunning { pid: None });
                        }
                        tokio::time::sleep(POLL).await;
                        continue;
                    }
                },
            };
            match holder_state(pid) {
                Holder::Alive => return Err(InstanceError::AlreadyRunning { pid: Some(pid) }),
                Holder::Gone => {}
                Holder::Dying => {
                    if waiting != Some(pid) {
                        warn!(
                            pid,
                            wait_secs = wait.as_secs(),
                            "a killed velocache daemon still holds the instance lock while it exits; waiting for it"
                        );
                        waiting = Some(pid);
                    }
                }
            }
            if started.elapsed() >= wait {
                return Err(InstanceError::StillExiting {
                    pid,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The pid of the process holding the lock `name`, by a non-blocking connect (never waits on a
/// full backlog) and `SO_PEERCRED`.
fn holder_pid(name: &[u8]) -> Option<i32> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let addr = UnixAddr::new_abstract(name).ok()?;
    socket::connect(fd.as_raw_fd(), &addr).ok()?;
    let pid = getsockopt(&fd, PeerCredentials).ok()?.pid();
    (pid > 0).then_some(pid)
}

fn holder_state(pid: i32) -> Holder {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Holder::Gone;
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    classify(&stat, &status)
}

/// Decide from `/proc/PID/stat` and `/proc/PID/status` whether a process is on its way out.
fn classify(stat: &str, status: &str) -> Holder {
    // `pid (comm) state ppid pgrp session tty_nr tpgid flags …`; comm may hold spaces and ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Holder::Gone;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().copied().unwrap_or("");
    let flags = fields
        .get(6)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(0);
    // A zombie leader holding the lock: its other threads are still exiting.
    if matches!(state, "Z" | "X" | "x") || flags & PF_EXITING != 0 {
        return Holder::Dying;
    }
    // SIGKILL for the thread group: nobody dequeues it from the shared set once the group
    // exit has begun, and it cannot be blocked, caught or ignored.
    let sigkill = status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (libc::SIGKILL - 1)) != 0);
    if sigkill {
        Holder::Dying
    } else {
        Holder::Alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_RUNNING: &str =
        "4242 (velocache) S 1 4242 4242 0 -1 4194560 2127 0 0 0 9 4 0 0 20 0 7 0";
    const STATUS_QUIET: &str = "Name:\tvelocache\nState:\tS (sleeping)\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000000000\n";

    #[test]
    fn a_running_process_is_alive() {
        assert_eq!(classify(STAT_RUNNING, STATUS_QUIET), Holder::Alive);
    }

    #[test]
    fn sigkill_pending_for_the_group_is_dying() {
        let status = STATUS_QUIET.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000000100");
        assert_eq!(classify(STAT_RUNNING, &status), Holder::Dying);
        // SIGTERM (a graceful stop in progress) is not.
        let status = STATUS_QUIET.replace("ShdPnd:\t0000000000000000", "ShdPnd:\t0000000000004000");
        assert_eq!(classify(STAT_RUNNING, &status), Holder::Alive);
    }

    #[test]
    fn exiting_flag_and_zombie_leader_are_dying() {
        let exiting = STAT_RUNNING.replace(" 4194560 ", " 4194564 ");
        assert_eq!(classify(&exiting, STATUS_QUIET), Holder::Dying);
        let zombie = STAT_RUNNING.replace(") S ", ") Z ");
        assert_eq!(classify(&zombie, STATUS_QUIET), Holder::Dying);
        // A name with spaces and parentheses does not shift the fields.
        let odd = STAT_RUNNING.replace("(velocache)", "(a) b (c)");
        assert_eq!(classify(&odd, STATUS_QUIET), Holder::Alive);
        assert_eq!(classify("garbage", ""), Holder::Gone);
    }

    #[tokio::test]
    async fn a_killed_child_not_yet_reaped_reads_as_dying() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        assert_eq!(holder_state(pid), Holder::Alive);
        child.kill().expect("kill");
        // Not reaped yet: a zombie (or still exiting).
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(Instant::now() < end, "the child did not die");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(holder_state(pid), Holder::Dying);
        child.wait().expect("wait");
        assert_eq!(holder_state(pid), Holder::Gone);
    }

    #[tokio::test]
    async fn a_live_holder_is_refused_at_once_with_its_pid() {
        let name = format!("velocache-test-{}", rand::random::<u64>());
        let held = InstanceLock::acquire_named(name.as_bytes(), Duration::from_secs(5))
            .await
            .expect("first");
        match InstanceLock::acquire_named(name.as_bytes(), Duration::from_secs(5)).await {
            Err(InstanceError::AlreadyRunning { pid }) => {
                assert_eq!(pid, Some(std::process::id() as i32));
            }
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("a second lock was taken"),
        }
        drop(held);
        InstanceLock::acquire_named(name.as_bytes(), Duration::from_secs(5))
            .await
            .expect("free again");
    }
}
