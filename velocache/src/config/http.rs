//! `[http]`: plain HTTP interception (TCP 80) and the cache behind it (shared with decrypted
//! HTTPS).
use std::path::PathBuf;

use super::{Invalid, Millis, Secs, intercept::service_section};

service_section!(
    /// `[http]`
    HttpConfig, Http, [Tcp], 80, 15080, {
        /// Store responses (off: a transparent proxy that never stores).
        cache: bool = true,
        /// Where the disk cache lives (default `<state_dir>/http-cache`).
        cache_dir: Option<PathBuf> = None,
        /// Size limit of the disk cache; least recently used objects are evicted past it.
        cache_max_bytes: u64 = 10 << 30,
        /// Larger objects are passed through, not stored.
        max_object_bytes: u64 = 8 << 30,
        /// Objects are stored in slices of this size; a Range request is a hit once its
        /// slices are stored, and a Range miss fetches only the slices it lacks.
        slice_bytes: u64 = 1 << 20,
        /// RAM kept for small, complete objects (answered without touching the disk).
        memory_cache_bytes: u64 = 64 << 20,
        /// Objects up to this size are eligible for the RAM tier.
        memory_object_max_bytes: u64 = 256 << 10,
        /// A download that makes no progress for this long no longer blocks other clients
        /// asking for the same object (they get their own fetch).
        lock_age_ms: Millis = Millis(30_000),
        /// How long a client waits for another client's download of the same object to
        /// produce headers or more bytes before going to the origin itself.
        lock_wait_ms: Millis = Millis(10_000),
        /// Connecting to an origin.
        connect_timeout_ms: Millis = Millis(10_000),
        /// Waiting for an origin's response headers.
        response_timeout_ms: Millis = Millis(60_000),
        /// Idle keep-alive connections to origins are closed after this long.
        upstream_idle_secs: Secs = Secs(90),
        /// A client connection must send a request's headers within this long.
        header_read_timeout_ms: Millis = Millis(30_000),
        /// Heuristic freshness: this percentage of the time since `Last-Modified`.
        heuristic_percent: u64 = 10,
        /// Upper bound of heuristic freshness, seconds.
        heuristic_max_secs: Secs = Secs(86_400),
        /// `fdatasync` slices and metadata before they become visible (survives power loss,
        /// not only a crash of the daemon).
        fsync: bool = true,
        /// io_uring submission queue size of the disk thread.
        uring_entries: u32 = 256,
        /// Send hits' bodies on plain HTTP/1.1 connections from the slice files with
        /// `sendfile` (off: copy them through userspace, as decrypted HTTPS is).
        sendfile: bool = true,
        /// When an origin fails (refuses, resets, closes without answering, times out, answers
        /// 5xx), a stored response this many seconds past its freshness may answer instead if
        /// it has no `stale-if-error` of its own (RFC 5861; never for `must-revalidate`,
        /// `proxy-revalidate`, `no-cache` or `s-maxage`). 0: only `stale-if-error` allows it.
        stale_if_error_default_secs: Secs = Secs(60),
        /// The pseudonym in `Via` headers.
        via: String = "velocache".into(),
    }
);

impl HttpConfig {
    /// The `[http]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        if !(64 << 10..=64 << 20).contains(&self.slice_bytes) {
            return Err(Invalid::new(
                "http.slice_bytes",
                "must be between 64 KiB (65536) and 64 MiB (67108864)",
            ));
        }
        if self.cache_max_bytes < self.slice_bytes {
            return Err(Invalid::new(
                "http.cache_max_bytes",
                "must hold at least one slice (http.slice_bytes)",
            ));
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > self.cache_max_bytes {
            return Err(Invalid::new(
                "http.max_object_bytes",
                "must be at least 1 and at most http.cache_max_bytes",
            ));
        }
        if self.memory_object_max_bytes > self.memory_cache_bytes {
            return Err(Invalid::new(
                "http.memory_object_max_bytes",
                "must not exceed http.memory_cache_bytes",
            ));
        }
        for (key, v) in [
            ("http.lock_age_ms", self.lock_age_ms),
            ("http.lock_wait_ms", self.lock_wait_ms),
            ("http.connect_timeout_ms", self.connect_timeout_ms),
            ("http.response_timeout_ms", self.response_timeout_ms),
            ("http.header_read_timeout_ms", self.header_read_timeout_ms),
        ] {
            v.at_least_one(key)?;
        }
        if self.heuristic_percent > 100 {
            return Err(Invalid::new("http.heuristic_percent", "must be 0..=100"));
        }
        if !(8..=4096).contains(&self.uring_entries) || !self.uring_entries.is_power_of_two() {
            return Err(Invalid::new(
                "http.uring_entries",
                "must be a power of two between 8 and 4096",
            ));
        }
        if self.via.is_empty()
            || !self
                .via
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        {
            return Err(Invalid::new(
                "http.via",
                "must be a token (letters, digits, - . _)",
            ));
        }
        Ok(())
    }
}
