//! The TCP hook: streams on the ports plugins claim (`ports = [...]`), each driven by one
//! plugin instance for its whole life.
//!
//! The TCP service asks [`Plugins::tcp_session`] for a new stream on a claimed port and gets a
//! [`TcpSession`] that holds one instance (taken from the plugin's pool, or made) until it is
//! dropped — so a plugin keeps per-stream state between events, and a reload does not cut the
//! stream: it finishes on the instance it started on. Each event goes in through
//! [`TcpSession::event`] and the plugin's commands come out, in order; after a failure the
//! plugin is disabled and every later event returns the error, and the caller splices or closes
//! as if no plugin were there.
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    Hook, PluginError, Plugins, pool::Lease, runtime::bindings::exports::velocache::plugin::tcp,
};

/// One event of a stream.
pub type TcpEvent = tcp::Event;
/// One command of the plugin's answer.
pub type TcpCommand = tcp::Command;
/// Where an upstream connection goes.
pub type TcpTarget = tcp::Target;

/// Stream numbers, unique in the daemon's life (the WIT asks only for unique per instance).
static STREAMS: AtomicU64 = AtomicU64::new(1);

/// A stream on a claimed port and the plugin instance pinned to it.
pub struct TcpSession {
    lease: Lease,
    stream: u64,
}

impl TcpSession {
    /// The plugin driving the stream.
    pub fn plugin(&self) -> &str {
        self.lease.plugin().name()
    }

    /// The stream's number, as the plugin sees it.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// One event; Err when the plugin was disabled (trap/overrun) — the caller then splices or
    /// closes as if no plugin.
    pub fn event(&mut self, ev: TcpEvent) -> Result<Vec<TcpCommand>, PluginError> {
        let plugin = self.lease.plugin().clone();
        let stream = self.stream;
        plugin.call_on(&mut self.lease, Hook::Tcp, |store, g| match &g.tcp {
            Some(tcp) => tcp.call_on_event(store, stream, &ev),
            None => Ok(Vec::new()),
        })
    }
}

impl Plugins {
    /// Ports claimed by tcp-hook plugins: (plugin name, port).
    pub fn tcp_ports(&self) -> Vec<(String, u16)> {
        let set = self.current();
        set.hooked(Hook::Tcp)
            .iter()
            .flat_map(|p| {
                p.manifest
                    .ports
                    .iter()
                    .map(|port| (p.name().to_string(), *port))
            })
            .collect()
    }

    /// A session for a new stream on a claimed port (pins one instance for the stream's life);
    /// None if no live plugin claims it (or it has every instance in use).
    pub fn tcp_session(&self, port: u16) -> Option<TcpSession> {
        let set = self.current();
        let plugin = set
            .hooked(Hook::Tcp)
            .iter()
            .find(|p| p.live() && p.manifest.ports.contains(&port))?;
        match plugin.lease(Hook::Tcp) {
            Ok(lease) => Some(TcpSession {
                lease,
                stream: STREAMS.fetch_add(1, Ordering::Relaxed),
            }),
            Err(e) => {
                tracing::debug!(plugin = %plugin.name(), port, error = %e, "no plugin session for a stream");
                None
            }
        }
    }
}
