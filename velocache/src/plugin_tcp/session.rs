//! The seam between the stream driver and the plugin runtime, in the shape of the WIT
//! interface `tcp` (`wit/plugin.wit`): [`Event`]s in, [`Command`]s out, one [`StreamSession`]
//! per stream.
//!
//! The runtime (`crate::plugins`) implements [`StreamPlugins`] for its live plugin set; the
//! driver never sees WebAssembly, and its tests drive it with sessions written in Rust.
use thiserror::Error;

/// Where an upstream connection goes: an address or a name the gateway resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `192.0.2.1`, `2001:db8::1` (brackets allowed) or a name.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// What happened on a stream, as the plugin is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new stream: the client's address and the address it was going to (`ip:port`).
    Opened {
        /// The client.
        client: String,
        /// The original destination.
        orig_dst: String,
    },
    /// Bytes from the client.
    ClientData(Vec<u8>),
    /// The upstream connection asked for is open.
    UpstreamConnected,
    /// The upstream connection could not be opened (why).
    UpstreamFailed(String),
    /// Bytes from the upstream connection.
    UpstreamData(Vec<u8>),
    /// The client closed its side.
    ClientClosed,
    /// The upstream closed its side.
    UpstreamClosed,
}

/// What the plugin wants done, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Write these bytes to the client.
    ToClient(Vec<u8>),
    /// Write these bytes upstream (queued until connected).
    ToUpstream(Vec<u8>),
    /// Open the stream's one upstream connection.
    Connect(Target),
    /// Copy both ways from now on without calling the plugin.
    Splice,
    /// Add a field to the stream's `flow` line.
    Tag(String, String),
    /// Close both sides.
    Close,
}

/// Why a session stopped answering.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SessionError {
    /// The plugin was disabled (it trapped, ran past its time budget or its memory cap, or was
    /// disabled before): the stream goes on as if it were absent.
    #[error("plugin `{plugin}` is disabled: {reason}")]
    Disabled {
        /// The plugin's name.
        plugin: String,
        /// What the runtime said.
        reason: String,
    },
}

/// One stream's conversation with one plugin instance.
pub trait StreamSession: Send {
    /// The plugin's name (for logs, metrics and the flow line).
    fn plugin(&self) -> &str;

    /// Tell the plugin what happened; its commands, to be run in order. An error means the
    /// plugin is out of the stream for good.
    fn event(&mut self, ev: Event) -> Result<Vec<Command>, SessionError>;
}

/// The live plugin set, as far as TCP streams go.
pub trait StreamPlugins: Send + Sync + 'static {
    /// `(plugin, port)` for every port a plugin with the `tcp` hook claims.
    fn tcp_ports(&self) -> Vec<(String, u16)>;

    /// A session of the plugin claiming `port` (`None`: nobody claims it, or that plugin is
    /// disabled).
    fn tcp_session(&self, port: u16) -> Option<Box<dyn StreamSession>>;
}
