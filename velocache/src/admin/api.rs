//! The admin API's wire types: what the daemon answers and the CLI reads, as JSON.
//!
//! Both sides use these structs, so a field renamed here is renamed for both; scripts that use
//! `--json` see exactly these shapes. Every endpoint answers `application/json` except
//! `/metrics` (OpenMetrics text) and errors always carry an [`ErrorBody`].
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::dns_api::{DnsEntryView, DnsShowReport};

/// API paths, shared by the server's router and the client.
pub mod paths {
    /// `GET`: [`super::StatusReport`].
    pub const STATUS: &str = "/v1/status";
    /// `GET`: [`super::StatsReport`].
    pub const STATS: &str = "/v1/stats";
    /// `POST`: reload configuration and rules; [`super::ReloadReport`].
    pub const RELOAD: &str = "/v1/reload";
    /// `POST`: graceful shutdown (like SIGTERM); [`super::StopReport`].
    pub const STOP: &str = "/v1/stop";
    /// `GET`: [`super::RulesReport`].
    pub const RULES: &str = "/v1/rules";
    /// `POST`: reload the rules file only; [`super::RulesReloadReport`].
    pub const RULES_RELOAD: &str = "/v1/rules/reload";
    /// `POST` [`super::CacheQuery`]: [`super::CacheListing`].
    pub const CACHE_LIST: &str = "/v1/cache/list";
    /// `POST` [`super::CacheShow`]: [`super::CacheEntry`].
    pub const CACHE_SHOW: &str = "/v1/cache/show";
    /// `POST` [`super::PurgeRequest`]: [`super::PurgeReport`].
    pub const CACHE_PURGE: &str = "/v1/cache/purge";
    /// `POST` [`super::WarmRequest`]: [`super::WarmReport`].
    pub const CACHE_WARM: &str = "/v1/cache/warm";
    /// `GET`: [`super::CallsReport`].
    pub const CALLS: &str = "/v1/calls";
    /// `GET`: [`super::CaReport`].
    pub const CA: &str = "/v1/ca";
    /// `POST`: generate a new local CA; [`super::CaReport`].
    pub const CA_ROTATE: &str = "/v1/ca/rotate";
    /// `GET`: [`super::OriginsReport`].
    pub const ORIGINS: &str = "/v1/origins";
    /// `POST` [`super::RecordStart`]: start recording a host; [`super::RecordReport`].
    pub const RECORD_START: &str = "/v1/record/start";
    /// `POST`: stop the recording and write its HAR file; [`super::RecordReport`].
    pub const RECORD_STOP: &str = "/v1/record/stop";
    /// `GET`: the recording in progress, or the last one; [`super::RecordReport`].
    pub const RECORD: &str = "/v1/record";
    /// `POST` [`super::DnsFlushRequest`]: drop DNS answers; [`super::DnsFlushReport`].
    pub const DNS_FLUSH: &str = "/v1/dns/flush";
    /// `GET`: [`super::PluginsReport`].
    pub const PLUGINS: &str = "/v1/plugins";
    /// `POST`: re-read `[plugins] dir`; [`super::PluginsReloadReport`].
    pub const PLUGINS_RELOAD: &str = "/v1/plugins/reload";
    /// `GET ?limit=N`: the live feed's last records.
    pub const LIVE_HISTORY: &str = "/v1/live/history";
    /// `GET ?id=TRACE_ID`: one HTTP(S) request as the inspector shows it.
    pub const LIVE_INSPECT: &str = "/v1/live/inspect";
    /// `GET`: WebSocket of the live feed (the dashboard's listener).
    pub const LIVE_WS: &str = "/v1/live/ws";
    /// `GET ?name=NAME&type=TYPE`: [`super::DnsShowReport`].
    pub const DNS_SHOW: &str = "/v1/dns/show";
    /// `GET`: the last hour's charts.
    pub const ANALYTICS: &str = "/v1/analytics";
    /// `GET`: OpenMetrics text.
    pub const METRICS: &str = "/metrics";
}

pub use super::plugin_api::{PluginRefusal, PluginView, PluginsReloadReport, PluginsReport};

/// What kind of error an API call met; scripts (and the CLI's exit codes) branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed (bad JSON, missing parameter, bad glob).
    BadRequest,
    /// The TCP listener needs a valid bearer token.
    Unauthorized,
    /// The thing asked for does not exist (a cache entry, …).
    NotFound,
    /// The service that would answer is not enabled or not built into this daemon yet.
    NotAvailable,
    /// The endpoint does not exist (CLI and daemon of different versions?).
    NoSuchEndpoint,
    /// The request was valid but failed (a bad rules file on reload, an I/O error, …).
    Failed,
    /// The caller is known but may not do this (a read-only dashboard login changing
    /// something, a change without its CSRF token).
    Forbidden,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
    /// What kind of error, for scripts.
    pub kind: ErrorKind,
}

/// `service status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `running` or `stopping` (draining flows after a stop request or signal).
    pub state: String,
    /// Daemon process id.
    pub pid: u32,
    /// Daemon version.
    pub version: String,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The configuration file the daemon reads (and re-reads on reload), if any.
    pub config_file: Option<String>,
    /// The rules file in force, if any.
    pub rules_file: Option<String>,
    /// Rules in force.
    pub rules: usize,
    /// Services and whether they intercept.
    pub services: Vec<ServiceStatus>,
    /// LAN interfaces the classifier is attached to.
    pub interfaces: Vec<String>,
    /// Flows in progress (all services).
    pub active_sessions: u64,
    /// Settings changed in the file since start that only a restart applies (dotted keys).
    pub restart_required: Vec<String>,
    /// The last reload, if there was one.
    pub last_reload: Option<ReloadReport>,
    /// Admin listeners: the socket path and, if on, the TCP addresses.
    pub admin: AdminListeners,
}

/// Where the admin API and metrics are served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminListeners {
    /// The Unix socket.
    pub socket: String,
    /// The TCP admin listener, if on.
    pub tcp: Option<String>,
    /// The metrics-only TCP listener, if on.
    pub metrics: Option<String>,
}

/// One service in [`StatusReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// `http`, `https`, `dns`, `sip`.
    pub service: String,
    /// Whether its ports are intercepted.
    pub enabled: bool,
    /// Intercepted destination ports.
    pub ports: Vec<u16>,
    /// The daemon's transparent listener port.
    pub listen_port: u16,
}

/// `stats`: everything is read from the metrics registry (the one source of truth), grouped
/// by service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Per service.
    pub services: Vec<ServiceStats>,
    /// Cache warm-up progress.
    pub warmup: WarmupProgress,
    /// Daemon-wide samples (`velocache_process_*`, reloads, …) not tied to one service.
    pub daemon: Vec<Sample>,
}

/// One service's statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Service name.
    pub service: String,
    /// Whether its ports are intercepted.
    pub enabled: bool,
    /// Flows the daemon is handling now.
    pub active_sessions: u64,
    /// Flows the daemon has handled since start.
    pub flows: u64,
    /// Kernel classifier packet counters by verdict (`steered_listener` = new flows steered to
    /// the daemon, `passed_no_listener` = fail-open, `bypassed_*`, …); only non-zero ones.
    pub kernel: BTreeMap<String, u64>,
    /// Every sample the service registered itself (`velocache_<service>_…`): hits, misses,
    /// bytes, latency histograms (count and sum), stream gauges.
    pub metrics: Vec<Sample>,
}

/// One metrics sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Full metric name as exported (`velocache_dns_hits_total`).
    pub name: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Cache warm-up progress (spec B-3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmupProgress {
    /// `idle` (nothing asked), `running`, `done`, or `unavailable` (URLs listed but no HTTP
    /// cache to fill).
    pub state: String,
    /// URLs in the current (or last) run.
    pub total: u64,
    /// URLs finished (ok or failed).
    pub done: u64,
    /// URLs fetched into the cache.
    pub ok: u64,
    /// URLs that failed.
    pub failed: u64,
    /// Body bytes fetched.
    pub bytes: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// What asked (`SIGHUP`, `api`).
    pub trigger: String,
    /// Unix time (seconds).
    pub at: u64,
    /// The configuration part.
    pub config: ConfigReload,
    /// The rules part.
    pub rules: RulesReloadReport,
}

impl ReloadReport {
    /// Whether both parts succeeded.
    pub fn ok(&self) -> bool {
        self.config.error.is_none() && self.rules.error.is_none()
    }
}

/// The configuration part of a reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigReload {
    /// The file re-read (none: the daemon runs on defaults and environment).
    pub file: Option<String>,
    /// Settings that changed and now apply (dotted keys).
    pub applied: Vec<String>,
    /// Settings that changed but only apply after a restart (dotted keys).
    pub restart_required: Vec<String>,
    /// Why the file was refused (`FILE:LINE: key `…`: reason`); the running configuration
    /// stays.
    pub error: Option<String>,
}

/// The rules part of a reload (and `rules reload`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RulesReloadReport {
    /// The rules file (none: no rules).
    pub file: Option<String>,
    /// Rules in force after the reload (the old ones if it failed).
    pub rules: usize,
    /// Why the file was refused (`FILE:LINE: reason`); the old rules stay.
    pub error: Option<String>,
}

/// `service stop`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReport {
    /// Always true: the daemon is stopping.
    pub stopping: bool,
    /// Flows that get `shutdown_grace_secs` to finish.
    pub active_sessions: u64,
    /// Seconds flows may take before they are cut.
    pub grace_secs: u64,
}

/// `rules show`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulesReport {
    /// The rules file, if any.
    pub file: Option<String>,
    /// Rules in evaluation order.
    pub rules: Vec<RuleView>,
    /// URLs warmed into the cache at start and on `cache warm` without URLs.
    pub warmup_urls: Vec<String>,
}

/// One rule as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    /// Name.
    pub name: String,
    /// Line of `[[rule]]` in the file.
    pub line: usize,
    /// `cache`, `passthrough`, `intercept_no_cache`, `deny`.
    pub action: String,
    /// Host patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_host: Vec<String>,
    /// Path globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_path: Vec<String>,
    /// Methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_method: Vec<String>,
    /// Content-type globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_content_type: Vec<String>,
    /// Services it applies to (empty: every service its matchers fit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// TTL override in seconds.
    pub ttl_override_secs: Option<u64>,
    /// Ghost mode.
    #[serde(default)]
    pub ghost: bool,
    /// Active health check: `GET <path> every <ms>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<String>,
    /// Faults injected into the requests it decides (chaos testing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultView>,
}

/// A rule's `fault = { … }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultView {
    /// Delay before the request goes on, ms.
    pub delay_ms: Option<u64>,
    /// Status answered instead of contacting the origin.
    pub abort_status: Option<u16>,
    /// Share of requests aborted, percent.
    pub abort_percent: Option<f64>,
    /// Response body rate limit, kilobits per second.
    pub bandwidth_kbps: Option<u64>,
}

/// `cache ls` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheQuery {
    /// A URL or URL glob; none: every object.
    pub pattern: Option<String>,
    /// At most this many entries.
    pub limit: usize,
}

/// `cache show` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheShow {
    /// The URL.
    pub url: String,
}

/// `cache ls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheListing {
    /// Entries (at most the requested limit).
    pub entries: Vec<CacheEntry>,
    /// Entries matching in total (may exceed `entries.len()`).
    pub total: u64,
}

/// One cached object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The URL (or, for content-addressed objects, the URL it was first fetched as).
    pub url: String,
    /// The cache key, when it differs from the URL (content-addressed, query-normalised).
    pub key: Option<String>,
    /// HTTP status stored.
    pub status: u16,
    /// Body bytes.
    pub size_bytes: u64,
    /// Content type.
    pub content_type: Option<String>,
    /// Unix time the object was stored.
    pub stored_at: Option<u64>,
    /// Unix time it stops being fresh.
    pub fresh_until: Option<u64>,
    /// Times it was served from the cache.
    pub hits: Option<u64>,
    /// Anything else the cache wants to show (`etag`, `last_modified`, `rule`, slices…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// `cache purge` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRequest {
    /// A URL, or a glob over URLs (`*` matches any run of characters, `/` included).
    pub pattern: String,
    /// Also remove the objects from the shared tier (`[shared]`) and tell the other gateways
    /// to drop their copies.
    #[serde(default)]
    pub shared: bool,
}

/// `cache purge` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// The pattern.
    pub pattern: String,
    /// Objects removed.
    pub purged: u64,
    /// Objects removed from the shared tier and announced to the other gateways (with
    /// `shared`).
    #[serde(default)]
    pub shared: u64,
    /// Bytes freed.
    pub bytes: u64,
}

/// `dns flush` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsFlushRequest {
    /// One name (every type, class and query shape of it); none: every answer.
    #[serde(default)]
    pub name: Option<String>,
}

/// `dns flush` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsFlushReport {
    /// The name flushed, or none for everything.
    pub name: Option<String>,
    /// Answers removed from the daemon's cache.
    pub entries: u64,
    /// Answers removed from the kernel's map (`[dns] kernel_answers`).
    pub kernel: u64,
}

/// `cache warm` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmRequest {
    /// URLs to fetch; empty: the rules file's `warmup_urls`.
    pub urls: Vec<String>,
    /// Answer when every URL is done (true) or as soon as the run started (false).
    pub wait: bool,
}

/// `cache warm` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmReport {
    /// URLs asked for.
    pub total: u64,
    /// Per URL, when the request waited.
    pub results: Vec<WarmResult>,
}

/// One URL of a warm-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmResult {
    /// The URL.
    pub url: String,
    /// Whether it is in the cache now.
    pub ok: bool,
    /// The origin's status, if it answered.
    pub status: Option<u16>,
    /// Body bytes fetched.
    pub bytes: u64,
    /// What the cache did (`stored`, `fresh` (already cached), `not_cacheable`, …).
    pub outcome: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// `calls`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CallsReport {
    /// Calls in progress.
    pub active: Vec<CallRecord>,
    /// Calls that ended recently, newest first.
    pub recent: Vec<CallRecord>,
}

/// One SIP call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Call-ID.
    pub call_id: String,
    /// From URI.
    pub from: String,
    /// To URI.
    pub to: String,
    /// The LAN client's signalling address.
    pub client: String,
    /// The far end's signalling address.
    pub far: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// `calling`, `ringing`, `answered`, `confirmed`, or how it ended (`completed`, `failed`…).
    pub state: String,
    /// Unix time (ms) of the initial INVITE.
    pub started_at_ms: Option<u64>,
    /// Call setup time (INVITE to answer), ms — the `call` log line's `setup_ms`.
    pub setup_ms: Option<u64>,
    /// Post-dial delay (INVITE to the first 18x, or to the answer when there was none), ms.
    #[serde(default)]
    pub pdd_ms: Option<u64>,
    /// Talk time so far or in total, ms.
    pub duration_ms: Option<u64>,
    /// Final status code and reason of the INVITE.
    pub final_status: Option<u16>,
    /// Reason phrase.
    pub reason: Option<String>,
    /// Who hung up (or `plugin NAME` for an INVITE a plugin rejected).
    pub ended_by: Option<String>,
    /// Per media direction.
    #[serde(default)]
    pub media: Vec<MediaStats>,
    /// Fields plugins added to the call's record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// One direction of one media stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaStats {
    /// `client->far`, `far->client`.
    pub direction: String,
    /// `audio`, `video`.
    pub kind: String,
    /// Codec.
    pub codec: Option<String>,
    /// Packets relayed.
    pub packets: u64,
    /// Loss in percent.
    pub loss_pct: Option<f64>,
    /// Interarrival jitter, ms.
    pub jitter_ms: Option<f64>,
    /// Estimated MOS.
    pub mos: Option<f64>,
}

/// `ca export` / `ca rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaReport {
    /// The CA certificate, PEM.
    pub pem: String,
}

/// `GET /v1/origins`: every origin the gateway has fetched from or checks, with its health and
/// breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginsReport {
    /// Whether breakers act (`[origins] breaker`); off, they only watch.
    pub breaker_enabled: bool,
    /// The window error ratios are computed over, seconds.
    pub window_secs: u64,
    /// Origins, busiest first.
    pub origins: Vec<OriginView>,
}

/// One origin in [`OriginsReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginView {
    /// Address and port.
    pub origin: String,
    /// Host names requests to it carried (a few).
    pub hosts: Vec<String>,
    /// `closed`, `open` or `half_open`.
    pub state: String,
    /// Why the breaker last opened (empty if it never did).
    pub reason: String,
    /// Seconds until an open breaker lets probes through.
    pub retry_after_secs: u64,
    /// Requests since start.
    pub requests: u64,
    /// Failures since start.
    pub failures: u64,
    /// Requests refused by the open breaker since start.
    pub rejected: u64,
    /// Requests in the window.
    pub window_requests: u32,
    /// Failed requests in the window.
    pub window_failures: u32,
    /// `window_failures / window_requests` (0 with no requests).
    pub error_ratio: f64,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// The last failure (`connection refused`, `answered 503`, …) and how long ago, seconds.
    pub last_failure: Option<String>,
    /// Seconds since the last failure.
    pub last_failure_secs_ago: Option<u64>,
    /// Time to the response head, averaged (EWMA), milliseconds.
    pub latency_ms: Option<f64>,
    /// The last success's time to the response head, milliseconds.
    pub latency_last_ms: Option<f64>,
    /// Breaker state changes since start.
    pub transitions: u64,
    /// The active check, for origins a rule's `health_check` names.
    pub health_check: Option<HealthCheckView>,
}

/// An origin's active check in [`OriginView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckView {
    /// The rule that asks for it.
    pub rule: String,
    /// The path asked.
    pub path: String,
    /// Every how many milliseconds.
    pub interval_ms: u64,
    /// Whether the last check succeeded (`None` before the first).
    pub up: Option<bool>,
    /// What the last check got (`200`, `connection refused`, …).
    pub last: Option<String>,
    /// Checks done.
    pub checks: u64,
}

/// `record start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordStart {
    /// The host whose requests are recorded (as the client names it; a port is ignored).
    pub host: String,
    /// Stop by itself after this many seconds (none: at `record stop`).
    #[serde(default)]
    pub for_secs: Option<u64>,
    /// Keep at most this many bytes of each body (none: 1 MiB).
    #[serde(default)]
    pub body_cap_bytes: Option<u64>,
    /// Record at most this many requests (none: 10 000); later ones are counted as dropped.
    #[serde(default)]
    pub max_entries: Option<u64>,
}

/// `record start`, `stop`, `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordReport {
    /// `recording`, `stopped` (the last recording, written), or `idle` (none yet).
    pub state: String,
    /// The host recorded.
    pub host: Option<String>,
    /// The HAR file (written when the recording stops).
    pub file: Option<String>,
    /// Requests recorded.
    pub entries: u64,
    /// Requests not recorded (past `max_entries`).
    pub dropped: u64,
    /// Unix time the recording started.
    pub started_at: Option<u64>,
    /// Unix time it stops by itself, if it does.
    pub ends_at: Option<u64>,
    /// Bytes kept of each body.
    pub body_cap_bytes: u64,
}
