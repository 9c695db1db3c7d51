//! Binding every enabled service's transparent sockets — the part of start-up that needs
//! privileges (`IP_TRANSPARENT`), kept apart so that `app::run` can be given sockets bound any
//! other way (tests bind plain loopback sockets on port 0).
use tracing::warn;
use velocache_common::Service;

use super::AppError;
use crate::{
    config::{Config, Transport},
    datapath::DaemonSocket,
    net::{TransparentListener, TransparentUdp, wildcard_addrs},
};

/// The sockets bound for one service.
pub struct Bound {
    /// Which service.
    pub service: Service,
    /// Its intercepted destination ports (for the start-up log line).
    pub ports: Vec<u16>,
    /// The port its sockets listen on.
    pub listen_port: u16,
    /// Its TCP listeners.
    pub tcp: Vec<TransparentListener>,
    /// Its UDP sockets.
    pub udp: Vec<TransparentUdp>,
}

/// Bind every enabled service's listeners: IPv4 always, IPv6 where the host has it.
pub fn bind_all(config: &Config) -> Result<Vec<Bound>, AppError> {
    let mut all = Vec::new();
    for intercept in config.intercepts().into_iter().filter(|i| i.enabled) {
        let mut bound = Bound {
            service: intercept.service,
            ports: intercept.ports.clone(),
            listen_port: intercept.listen_port,
            tcp: Vec::new(),
            udp: Vec::new(),
        };
        for addr in wildcard_addrs(intercept.listen_port) {
            let v6 = addr.is_ipv6();
            for &transport in intercept.transports {
                let result = match transport {
                    Transport::Tcp => {
                        TransparentListener::bind_group(addr, crate::datapath::listeners_per_port())
                            .map(|l| bound.tcp.extend(l))
                    }
                    Transport::Udp => TransparentUdp::bind(addr).map(|s| bound.udp.push(s)),
                };
                match result {
                    Ok(()) => {}
                    // A host without IPv6 still gets IPv4 interception.
                    Err(e) if v6 && e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                        warn!(
                            service = intercept.service.name(),
                            "IPv6 unavailable; IPv4 only"
                        );
                    }
                    Err(source) => {
                        return Err(AppError::Bind {
                            service: intercept.service.name(),
                            transport,
                            addr,
                            source,
                        });
                    }
                }
            }
        }
        all.push(bound);
    }
    Ok(all)
}

impl Bound {
    /// Duplicates of these sockets for the datapath, which hands them the flows the kernel's
    /// own lookups decide (see `datapath::DaemonSocket`).
    pub fn daemon_sockets(&self) -> Result<Vec<DaemonSocket>, AppError> {
        use std::os::fd::AsFd as _;
        let tcp = self
            .tcp
            .iter()
            .map(|l| (Transport::Tcp, l.as_fd(), l.local_addr()));
        let udp = self
            .udp
            .iter()
            .map(|u| (Transport::Udp, u.as_fd(), u.local_addr()));
        let mut out = Vec::new();
        for (transport, fd, addr) in tcp.chain(udp) {
            let service = self.service;
            let bind_err = |source| AppError::Bind {
                service: service.name(),
                transport,
                addr: std::net::SocketAddr::from(([0, 0, 0, 0], self.listen_port)),
                source,
            };
            let addr = addr.map_err(bind_err)?;
            out.push(DaemonSocket {
                service,
                transport,
                v6: addr.is_ipv6(),
                fd: fd.try_clone_to_owned().map_err(bind_err)?,
            });
        }
        Ok(out)
    }

    /// Start the accept and receive loops of these sockets with `handlers`; each ends (and drops
    /// its socket, so new flows fail open) when `cancel` fires.
    pub fn serve(
        self,
        handlers: &crate::service::Handlers,
        replier: &std::sync::Arc<crate::net::UdpReplier>,
        cancel: &tokio_util::sync::CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) {
        use crate::net::{serve_tcp, serve_udp};
        for listener in self.tcp {
            tasks.spawn(serve_tcp(listener, handlers.tcp.clone(), cancel.clone()));
        }
        for socket in self.udp {
            let (replier, handler, cancel) =
                (replier.clone(), handlers.udp.clone(), cancel.clone());
            match handlers.udp.runtime() {
                // The handler's own runtime (DNS: a single-threaded one on its own thread).
                Some(runtime) => {
                    let served = runtime.spawn(async move {
                        match socket.into_current_runtime() {
                            Ok(socket) => serve_udp(socket, replier, handler, cancel).await,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot move a UDP socket to its runtime")
                            }
                        }
                    });
                    tasks.spawn(async move {
                        let _ = served.await;
                    });
                }
                None => {
                    tasks.spawn(serve_udp(socket, replier, handler, cancel));
                }
            }
        }
    }
}

/// Every proxied connection holds two descriptors (client and origin) and each cache read one
/// more: the usual soft limit of 1024 (systemd's default) would cap the gateway at a few
/// hundred clients, so the soft limit is raised to the hard one, as nginx's
/// `worker_rlimit_nofile` and Go's runtime do.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(from = soft, to = hard, "open-file limit raised"),
            Err(e) => warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        },
        Ok((soft, _)) => tracing::info!(limit = soft, "open-file limit"),
        Err(e) => warn!(error = %e, "cannot read the open-file limit"),
    }
}
