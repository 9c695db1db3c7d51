//! The live feed's wire types: one [`Record`] per thing that happened (a request, a query, a SIP
//! message, a TLS flow), and the inspector's [`Exchange`] for one HTTP(S) request.
//!
//! They are what `GET /v1/live/history`, the WebSocket `/v1/live/ws` and `GET /v1/live/inspect`
//! send, and what the web page and the CLI read: plain JSON, every field always present (empty
//! string, zero) so a reader never has to guess a shape.
use serde::{Deserialize, Serialize};

/// The kinds of records, as `Record::service` spells them.
pub mod kind {
    /// An HTTP request (plain).
    pub const HTTP: &str = "http";
    /// An HTTPS request (decrypted by the TLS layer).
    pub const HTTPS: &str = "https";
    /// A DNS query (hits of one name summarised per second: `count`).
    pub const DNS: &str = "dns";
    /// A SIP message.
    pub const SIP: &str = "sip";
    /// A TLS flow the kernel forwarded or the daemon spliced (SNI, ALPN, action).
    pub const TLS: &str = "tls";
}

/// One thing that happened, as the live view shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// Position in the feed (strictly increasing; a gap is records a reader missed).
    pub seq: u64,
    /// When, Unix milliseconds.
    pub ts_ms: u64,
    /// `http`, `https`, `dns`, `sip`, `tls` ([`kind`]).
    pub service: String,
    /// The client, `ip:port` (for DNS summaries: the address only).
    pub client: String,
    /// What it was about: the HTTP host, the DNS name, the SIP Call-ID, the TLS server name.
    pub host: String,
    /// The request in a few words: `GET /path`, `A`, `INVITE`, `200 OK`, `splice`.
    pub what: String,
    /// The outcome: the HTTP status, the DNS rcode, the SIP status or method, the TLS action.
    pub status: String,
    /// What the cache did (`hit`, `miss`, `revalidated`, `bypass`…; DNS `hit`, `miss`,
    /// `kernel_hit`, `local`); empty where no cache takes part.
    pub cache: String,
    /// Body bytes sent to the client (HTTP), answer bytes (DNS), message bytes (SIP).
    pub bytes: u64,
    /// How long it took, microseconds (0 where not measured).
    pub duration_us: u64,
    /// The rule that decided, if any.
    pub rule: String,
    /// Key to open it in the inspector (`GET /v1/live/inspect?id=…`): the HTTP trace id; empty
    /// when there is nothing more to show than the record.
    pub id: String,
    /// Queries one DNS summary stands for (1 for everything else).
    pub count: u64,
    /// Direction for SIP (`client->far`, `far->client`, as the ladder spells it); the transport
    /// otherwise.
    pub direction: String,
    /// Service-specific detail small enough to carry inline (DNS answers, TLS ALPN, SIP
    /// addresses): `key=value` pairs.
    pub detail: Vec<(String, String)>,
}

/// One header, as sent or received (names lower-cased as HTTP/2 and hyper carry them).
pub type Header = (String, String);

/// One request/response head pair on one side of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Head {
    /// The request line: method, target, version.
    pub request_line: String,
    /// The request's headers, in order.
    pub request_headers: Vec<Header>,
    /// The status line (empty when no response came).
    pub status_line: String,
    /// The response's headers, in order.
    pub response_headers: Vec<Header>,
}

/// Why the cache did what it did for one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheReason {
    /// `hit`, `miss`, `revalidated`, `stale`, `bypass`, `ghost`…
    pub status: String,
    /// The rule that decided, and its action.
    pub rule: String,
    /// The rule's action (`cache`, `bypass`, `deny`…), empty when no rule matched.
    pub action: String,
    /// The cache key (the URL it is stored under, and the varying request headers).
    pub key: String,
    /// The RFC 9111 (or gateway) reason a fetched response was not stored.
    pub not_stored: String,
    /// For answers from a stored object: its freshness lifetime, seconds.
    pub freshness_lifetime_secs: Option<u64>,
    /// Its age when answered, seconds.
    pub age_secs: Option<u64>,
    /// Revalidated with the origin (a 304 kept the stored body).
    pub revalidated: bool,
    /// Joined a download in progress.
    pub collapsed: bool,
    /// Answered stale because the origin failed.
    pub stale_if_error: bool,
    /// One sentence a person can read: why this answer came from where it came.
    pub explanation: String,
}

/// Timing of one request, milliseconds from the moment its head was read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// The request head was read (Unix ms).
    pub started_ms: u64,
    /// Until the request was sent to the origin (none: no origin request).
    pub upstream_sent_ms: Option<f64>,
    /// Until the origin's response head arrived: time to first byte from the origin.
    pub origin_ttfb_ms: Option<f64>,
    /// Until the response head was handed to the client.
    pub client_ttfb_ms: Option<f64>,
    /// Until the body was sent or abandoned.
    pub total_ms: f64,
    /// Body bytes the client got from the cache.
    pub bytes_from_cache: u64,
    /// Body bytes the client got from the origin.
    pub bytes_from_origin: u64,
}

/// Everything the inspector shows about one HTTP(S) request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Exchange {
    /// The trace id (also on the access-log line).
    pub id: String,
    /// `http` or `https`.
    pub service: String,
    /// The client, `ip:port`.
    pub client: String,
    /// Where the client meant to go, `ip:port`.
    pub orig_dst: String,
    /// The host.
    pub host: String,
    /// Between the client and the gateway.
    pub client_side: Head,
    /// Between the gateway and the origin (empty when the origin was not asked).
    pub origin_side: Head,
    /// The cache's decision.
    pub cache: CacheReason,
    /// The final status sent.
    pub status: u16,
    /// Whether the whole body was sent.
    pub complete: bool,
    /// Why it broke off.
    pub error: String,
    /// When things happened.
    pub timing: Timing,
}

/// A message the WebSocket sends besides records: how many records this connection missed
/// because it read too slowly (the daemon never waits for a browser).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    /// Records dropped for this connection so far.
    pub dropped: u64,
}

/// What the WebSocket sends: a record, or a drop notice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WsMessage {
    /// A record.
    Record(Box<Record>),
    /// Records were dropped.
    Dropped(Dropped),
}

/// `GET /v1/live/history`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct History {
    /// The records kept, oldest first.
    pub records: Vec<Record>,
    /// How many the history holds at most.
    pub capacity: usize,
    /// Records published since start.
    pub published: u64,
    /// Records dropped for slow WebSocket readers since start (all connections).
    pub dropped: u64,
    /// WebSocket readers connected now.
    pub subscribers: usize,
}
