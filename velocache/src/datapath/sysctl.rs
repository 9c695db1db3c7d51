//! TCP early demultiplexing, off in the gateway's network namespace while the datapath runs.
//!
//! Early demux looks a received packet's tuple up among the local TCP sockets *before routing*
//! and attaches the socket found to the packet; `ip_forward()` then drops a packet that carries
//! a socket. On a gateway that intercepts, the daemon's closing sockets (TIME_WAIT, orphaned
//! FIN_WAIT2) hold the tuples of clients and their original destinations, so a packet that is
//! meant to be forwarded — a connection the classifier passes, or any packet once the daemon is
//! gone (a TCX classifier detaches with it) — would be dropped until that socket expires, up to
//! a minute. With early demux off such packets are routed, and forwarded, like on any router;
//! the classifier assigns intercepted packets to their sockets itself, so interception loses
//! nothing (the kernel's documentation of `ip_early_demux` says the same of routing workloads).
//!
//! Data enters as the namespace's current setting and leaves as `0`; a clean stop (dropping
//! [`EarlyDemux`]) writes back what was found (after the sweep has destroyed the sockets that could capture packets). A
//! killed daemon leaves it off, which is what keeps forwarding exact after a crash.
use std::path::Path;

use tracing::{info, warn};

const TCP_EARLY_DEMUX: &str = "/proc/sys/net/ipv4/tcp_early_demux";

/// Early demux switched off; dropping it puts back what was found (a start that fails half-way
/// and a clean stop alike; a killed daemon does not drop it).
pub(super) struct EarlyDemux {
    found: Option<String>,
    path: &'static Path,
}

impl EarlyDemux {
    /// Switch early demux off in this thread's network namespace. A failure is logged: the
    /// datapath still works, only forwarding around the daemon's closing sockets is affected.
    pub(super) fn disable() -> Self {
        Self::disable_at(Path::new(TCP_EARLY_DEMUX))
    }

    fn disable_at(path: &'static Path) -> Self {
        let found = match std::fs::read_to_string(path) {
            Ok(v) => v.trim().to_string(),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read the TCP early demux setting");
                return EarlyDemux { found: None, path };
            }
        };
        if found == "0" {
            return EarlyDemux { found: None, path };
        }
        if let Err(e) = std::fs::write(path, "0") {
            warn!(path = %path.display(), error = %e,
                "cannot turn TCP early demux off: after the daemon stops, a client reusing a port \
                 an intercepted connection held may wait up to a minute");
            return EarlyDemux { found: None, path };
        }
        info!(was = %found, "TCP early demux off (forwarded packets are never held by the daemon's closing sockets)");
        EarlyDemux {
            found: Some(found),
            path,
        }
    }
}

impl Drop for EarlyDemux {
    /// Write back the setting found at start, if it was changed.
    fn drop(&mut self) {
        if let Some(found) = self.found.take()
            && let Err(e) = std::fs::write(self.path, &found)
        {
            warn!(path = %self.path.display(), error = %e, "cannot restore the TCP early demux setting");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_found_is_turned_off_and_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path: &'static Path = Box::leak(dir.path().join("tcp_early_demux").into_boxed_path());
        std::fs::write(path, "1\n").unwrap();
        let guard = EarlyDemux::disable_at(path);
        assert_eq!(std::fs::read_to_string(path).unwrap(), "0");
        drop(guard);
        assert_eq!(std::fs::read_to_string(path).unwrap(), "1");

        // Already off (a killed daemon left it so): left off at stop.
        std::fs::write(path, "0").unwrap();
        drop(EarlyDemux::disable_at(path));
        assert_eq!(std::fs::read_to_string(path).unwrap(), "0");
    }
}
