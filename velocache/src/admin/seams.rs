//! The seams services plug into the admin API: one small trait per capability, registered in
//! the [`AdminHub`] that every service finds in its `ServiceContext`.
//!
//! A service that owns a capability implements its trait and registers itself while its
//! handlers are built (`ctx.admin.register_cache(proxy.clone())`). Until something registers,
//! the API answers `503 not_available` ("the HTTP cache is not available") and the CLI exits with
//! its "not available" code, so a script can tell "not built/enabled" from "failed".
//!
//! | trait | implemented by | used by |
//! |---|---|---|
//! | [`CacheAdmin`] | the HTTP cache (`cache ls/show/purge/warm`, warm-up) | `cache …` |
//! | [`CallsAdmin`] | the SIP observer | `calls` |
//! | [`CaAdmin`] | the TLS layer (`tls::TlsShared`, registered by the wiring) | `ca export/rotate` |
//! | [`OriginsAdmin`] | the origins' health (`origins::Origins`, registered by the wiring) | `origins` |
//! | [`RecordAdmin`] | the HTTP proxy's recorder (`http::Recorder`) | `record start/stop/status` |
//! | [`PluginsAdmin`] | the plugin set (`plugins::Plugins`, registered by the wiring) | `plugins ls/reload` |
//!
//! The live feed ([`crate::live::Live`]) is not a capability but a channel: when the web
//! dashboard is on, the wiring enables it here and services publish into it.
//!
//! Counters (DNS hits and misses, cache bytes, RTP streams, …) need no trait: services register
//! them in their metrics sub-registry and `stats` reads them from there.
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use globset::GlobBuilder;
use thiserror::Error;

use super::api::{
    CacheEntry, CacheListing, CallsReport, DnsFlushReport, DnsShowReport, OriginsReport,
    PluginsReloadReport, PluginsReport, PurgeReport, RecordReport, RecordStart, WarmResult,
};
use super::calls_api::{CallShow, CaptureStatus};
use crate::config::Glob;

/// Why a seam call failed.
#[derive(Debug, Error)]
pub enum AdminError {
    /// The entry or object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request makes no sense for this service (a bad URL, …).
    #[error("{0}")]
    BadRequest(String),
    /// The operation failed.
    #[error("{0}")]
    Failed(String),
}

/// Which cache objects a `purge` or `ls` is about: an exact URL or a glob over URLs.
#[derive(Debug, Clone)]
pub struct UrlPattern {
    text: String,
    glob: Option<Glob>,
}

impl UrlPattern {
    /// Parse: text with a `*` is a glob in which `*` matches any run of characters (`/`
    /// included) and every other character stands for itself (URLs are full of `?` and `[`);
    /// anything else is one exact URL.
    pub fn new(text: &str) -> Result<Self, AdminError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AdminError::BadRequest("empty URL pattern".into()));
        }
        let glob = if text.contains('*') {
            let mut escaped = String::with_capacity(text.len() + 8);
            for c in text.chars() {
                if matches!(c, '?' | '[' | ']' | '{' | '}' | '\\') {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            Some(
                Glob::compile(
                    GlobBuilder::new(&escaped)
                        .backslash_escape(true)
                        .literal_separator(false),
                )
                .map_err(|e| AdminError::BadRequest(format!("bad glob `{text}`: {e}")))?,
            )
        } else {
            None
        };
        Ok(UrlPattern {
            text: text.to_string(),
            glob,
        })
    }

    /// The URL, when the pattern is one exact URL (lets a cache look it up instead of scanning).
    pub fn exact(&self) -> Option<&str> {
        self.glob.is_none().then_some(self.text.as_str())
    }

    /// Whether `url` matches.
    pub fn matches(&self, url: &str) -> bool {
        match &self.glob {
            Some(g) => g.is_match(url),
            None => url == self.text,
        }
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The HTTP cache, as the admin API sees it.
pub trait CacheAdmin: Send + Sync {
    /// Objects whose URL matches `pattern` (every object when `None`), at most `limit`, with
    /// the total number that matched.
    fn list(
        &self,
        pattern: Option<&UrlPattern>,
        limit: usize,
    ) -> BoxFuture<'_, Result<CacheListing, AdminError>>;

    /// The object stored for `url` (`NotFound` if none).
    fn show(&self, url: &str) -> BoxFuture<'_, Result<CacheEntry, AdminError>>;

    /// Remove every object matching `pattern`.
    /// With `shared`, also from the shared tier, and announced to the other gateways.
    fn purge(
        &self,
        pattern: &UrlPattern,
        shared: bool,
    ) -> BoxFuture<'_, Result<PurgeReport, AdminError>>;

    /// Fetch `url` through the daemon's own cache path — the same rules, keys and storage a
    /// client's request would use — so that the next client gets a hit. Called by the warm-up
    /// runner, a few URLs at a time.
    fn warm(&self, url: &str) -> BoxFuture<'_, Result<WarmResult, AdminError>>;
}

/// The SIP observer, as the admin API sees it.
pub trait CallsAdmin: Send + Sync {
    /// Calls in progress and recently ended, with media statistics.
    fn calls(&self) -> BoxFuture<'_, Result<CallsReport, AdminError>>;

    /// One call (in progress or among the recently ended): its ladder, per-direction media
    /// figures and capture.
    fn show(&self, call_id: &str) -> Result<CallShow, AdminError> {
        Err(AdminError::NotFound(format!("no call {call_id}")))
    }

    /// Start capturing a call's SIP messages and RTP packets (the kernel copies its fast-path
    /// frames); a capture already running goes on.
    fn capture_start(&self, call_id: &str) -> Result<CaptureStatus, AdminError> {
        Err(AdminError::NotFound(format!("no call {call_id}")))
    }

    /// Stop capturing a call (the packets stay for `pcap`).
    fn capture_stop(&self, call_id: &str) -> Result<CaptureStatus, AdminError> {
        Err(AdminError::NotFound(format!("no capture of {call_id}")))
    }

    /// The call's capture as a pcap file.
    fn pcap(&self, call_id: &str) -> Result<Vec<u8>, AdminError> {
        Err(AdminError::NotFound(format!("no capture of {call_id}")))
    }
}

/// The DNS answer cache.
pub trait DnsAdmin: Send + Sync {
    /// Drop the answers for `name` (any type, class or query shape), or every answer; the
    /// kernel's copies go too.
    fn flush(&self, name: Option<&str>) -> Result<DnsFlushReport, AdminError>;

    /// What is stored for `name` and query type `qtype` (`A`, `AAAA`, a number…).
    fn show(&self, name: &str, qtype: &str) -> Result<DnsShowReport, AdminError>;
}

/// The origins' health and breakers.
pub trait OriginsAdmin: Send + Sync {
    /// Every origin tracked, busiest first.
    fn origins(&self) -> OriginsReport;
}

/// The local CA of TLS interception.
pub trait CaAdmin: Send + Sync {
    /// The CA certificate, PEM, for clients to trust.
    fn ca_pem(&self) -> String;
    /// Generate a new CA; returns its certificate.
    fn rotate(&self) -> Result<String, AdminError>;
}

/// Recording a host's requests and responses to a HAR file.
pub trait RecordAdmin: Send + Sync {
    /// Start recording (one recording at a time: `BadRequest` while one runs).
    fn start(&self, req: &RecordStart) -> Result<RecordReport, AdminError>;
    /// Stop the recording and write its file (`NotFound` when none runs).
    fn stop(&self) -> BoxFuture<'_, Result<RecordReport, AdminError>>;
    /// The recording in progress, or the last one.
    fn status(&self) -> RecordReport;
}

/// WebAssembly plugins.
pub trait PluginsAdmin: Send + Sync {
    /// Every plugin loaded or refused, its state and counts.
    fn list(&self) -> PluginsReport;
    /// Re-read the plugin directory and swap the set in (calls in progress finish on the old
    /// instances); a plugin that does not load is reported and the others load.
    fn reload(&self) -> BoxFuture<'_, Result<PluginsReloadReport, AdminError>>;
    /// `(plugin, port)` for every TCP port the live set claims: after a reload the control
    /// plane writes them into the kernel's port map.
    fn tcp_ports(&self) -> Vec<(String, u16)> {
        Vec::new()
    }
}

/// Where services register what they offer the admin API. Cloning shares it; each capability
/// is registered at most once (a second registration is refused and returns `false`).
#[derive(Clone, Default)]
pub struct AdminHub {
    inner: Arc<Slots>,
}

#[derive(Default)]
struct Slots {
    cache: OnceLock<Arc<dyn CacheAdmin>>,
    calls: OnceLock<Arc<dyn CallsAdmin>>,
    dns: OnceLock<Arc<dyn DnsAdmin>>,
    ca: OnceLock<Arc<dyn CaAdmin>>,
    origins: OnceLock<Arc<dyn OriginsAdmin>>,
    record: OnceLock<Arc<dyn RecordAdmin>>,
    plugins: OnceLock<Arc<dyn PluginsAdmin>>,
    live: OnceLock<crate::live::Live>,
}

impl AdminHub {
    /// An empty hub: every capability answers "not available".
    pub fn new() -> Self {
        Self::default()
    }

    /// Turn the live feed on (`[admin] web_listen` set): done once, before services are built,
    /// so that each finds it while it is built.
    pub fn enable_live(&self, live: crate::live::Live) -> bool {
        self.inner.live.set(live).is_ok()
    }

    /// The live feed, if on: services keep the handle and publish into it.
    pub fn live(&self) -> Option<crate::live::Live> {
        self.inner.live.get().cloned()
    }

    /// Offer the HTTP cache.
    pub fn register_cache(&self, cache: Arc<dyn CacheAdmin>) -> bool {
        self.inner.cache.set(cache).is_ok()
    }

    /// Offer the SIP calls.
    pub fn register_calls(&self, calls: Arc<dyn CallsAdmin>) -> bool {
        self.inner.calls.set(calls).is_ok()
    }

    /// Offer the DNS answer cache.
    pub fn register_dns(&self, dns: Arc<dyn DnsAdmin>) -> bool {
        self.inner.dns.set(dns).is_ok()
    }

    /// The DNS answer cache, if registered.
    pub fn dns(&self) -> Option<Arc<dyn DnsAdmin>> {
        self.inner.dns.get().cloned()
    }

    /// Offer the local CA.
    pub fn register_ca(&self, ca: Arc<dyn CaAdmin>) -> bool {
        self.inner.ca.set(ca).is_ok()
    }

    /// Offer the origins' health.
    pub fn register_origins(&self, origins: Arc<dyn OriginsAdmin>) -> bool {
        self.inner.origins.set(origins).is_ok()
    }

    /// The origins' health, if registered.
    pub fn origins(&self) -> Option<Arc<dyn OriginsAdmin>> {
        self.inner.origins.get().cloned()
    }

    /// Offer recording.
    pub fn register_record(&self, record: Arc<dyn RecordAdmin>) -> bool {
        self.inner.record.set(record).is_ok()
    }

    /// Recording, if registered.
    pub fn record(&self) -> Option<Arc<dyn RecordAdmin>> {
        self.inner.record.get().cloned()
    }

    /// Offer the plugin set.
    pub fn register_plugins(&self, plugins: Arc<dyn PluginsAdmin>) -> bool {
        self.inner.plugins.set(plugins).is_ok()
    }

    /// The plugin set, if registered.
    pub fn plugins(&self) -> Option<Arc<dyn PluginsAdmin>> {
        self.inner.plugins.get().cloned()
    }

    /// The HTTP cache, if registered.
    pub fn cache(&self) -> Option<Arc<dyn CacheAdmin>> {
        self.inner.cache.get().cloned()
    }

    /// The SIP calls, if registered.
    pub fn calls(&self) -> Option<Arc<dyn CallsAdmin>> {
        self.inner.calls.get().cloned()
    }

    /// The local CA, if registered.
    pub fn ca(&self) -> Option<Arc<dyn CaAdmin>> {
        self.inner.ca.get().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_patterns_exact_and_glob() {
        let exact = UrlPattern::new("http://a.lab/x?y=1").unwrap();
        assert_eq!(exact.exact(), Some("http://a.lab/x?y=1"));
        assert!(exact.matches("http://a.lab/x?y=1"));
        assert!(!exact.matches("http://a.lab/x"));
        let glob = UrlPattern::new("http://a.lab/*.deb").unwrap();
        assert_eq!(glob.exact(), None);
        assert!(glob.matches("http://a.lab/pool/main/v/x.deb"));
        assert!(!glob.matches("http://b.lab/x.deb"));
        let query = UrlPattern::new("http://[fd77:2::2]/a?b=*").unwrap();
        assert!(query.matches("http://[fd77:2::2]/a?b=12"));
        assert!(
            !query.matches("http://[fd77:2::2]/aXb=12"),
            "`?` is literal"
        );
        assert!(UrlPattern::new("  ").is_err());
    }

    #[test]
    fn a_capability_registers_once() {
        struct Ca;
        impl CaAdmin for Ca {
            fn ca_pem(&self) -> String {
                "pem".into()
            }
            fn rotate(&self) -> Result<String, AdminError> {
                Err(AdminError::Failed("no".into()))
            }
        }
        let hub = AdminHub::new();
        assert!(hub.ca().is_none());
        assert!(hub.register_ca(Arc::new(Ca)));
        assert!(
            !hub.clone().register_ca(Arc::new(Ca)),
            "second registration refused"
        );
        assert_eq!(hub.ca().unwrap().ca_pem(), "pem");
    }
}
