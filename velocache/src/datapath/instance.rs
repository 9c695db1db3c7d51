//! One daemon per network namespace.
//!
//! The lock is an abstract Unix socket. Abstract names live in the network namespace, so two
//! daemons in two lab namespaces do not collide while two in the same one do; and the kernel
//! releases the name when the holder dies, even by SIGKILL, so there is no stale lock file to
//! clean. A second daemon connects to the name to learn the holder's pid for its error message.
use std::os::{
    linux::net::SocketAddrExt as _,
    unix::net::{SocketAddr, UnixListener, UnixStream},
};

use thiserror::Error;

const LOCK_NAME: &[u8] = b"velocache-daemon";

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
    /// The socket could not be created.
    #[error("cannot take the instance lock: {0}")]
    Io(#[source] std::io::Error),
}

/// Held for the daemon's lifetime; dropping it releases the lock.
pub struct InstanceLock {
    _listener: UnixListener,
}

impl InstanceLock {
    /// Take the lock or say who holds it.
    pub fn acquire() -> Result<Self, InstanceError> {
        let addr = SocketAddr::from_abstract_name(LOCK_NAME).map_err(InstanceError::Io)?;
        match UnixListener::bind_addr(&addr) {
            Ok(listener) => Ok(InstanceLock {
                _listener: listener,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                let pid = UnixStream::connect_addr(&addr)
                    .ok()
                    .and_then(|s| {
                        nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials)
                            .ok()
                    })
                    .map(|c| c.pid());
                Err(InstanceError::AlreadyRunning { pid })
            }
            Err(e) => Err(InstanceError::Io(e)),
        }
    }
}
