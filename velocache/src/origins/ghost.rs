//! Ghost mode's learned store: the last good response to each GET a `ghost = true` rule
//! matched, kept in RAM even when HTTP caching would not store it, to answer for its origin
//! when it fails and the cache has nothing usable.
//!
//! A response enters through [`GhostStore::learn`] (the proxy's body tap: status, head, body up
//! to `ghost_max_body_bytes`) under a [`GhostKey`] — original destination, host, path and query,
//! and for requests carrying `Authorization` or `Cookie` a hash of those headers, so one
//! client's answer never reaches a client with other credentials. It leaves through
//! [`GhostStore::exact`] (the same request) or [`GhostStore::nearest`] (a request never seen
//! whose path and query share a learned request's template, `template`); the store is bounded
//! by `ghost_max_bytes` and `ghost_max_entries` (least recently used first out).
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::SystemTime,
};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

use super::template;
use crate::{cache::policy, config::OriginsConfig};

/// Learned requests remembered per template for `nearest`.
const PER_TEMPLATE: usize = 16;

/// What identifies a learned response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GhostKey {
    /// The original destination and host, as one string.
    pub origin: String,
    /// Path and query.
    pub path: String,
    /// Hash of the request's `Authorization` and `Cookie`, if it had either.
    pub credentials: Option<String>,
}

impl GhostKey {
    /// The key of a request to `dst` for `host` and `path`, with headers `req`.
    pub fn new(dst: std::net::SocketAddr, host: &str, path: &str, req: &HeaderMap) -> GhostKey {
        GhostKey {
            origin: format!("{dst}|{}", host.to_ascii_lowercase()),
            path: path.to_string(),
            credentials: credentials(req),
        }
    }

    fn exact(&self) -> String {
        format!(
            "{}|{}|{}",
            self.origin,
            self.credentials.as_deref().unwrap_or("-"),
            self.path
        )
    }

    fn template(&self) -> String {
        format!(
            "{}|{}|{}",
            self.origin,
            self.credentials.as_deref().unwrap_or("-"),
            template::template(&self.path)
        )
    }
}

/// A hash of the request's credentials (`Authorization`, `Cookie`), if it has any.
fn credentials(req: &HeaderMap) -> Option<String> {
    let mut h = Sha256::new();
    let mut any = false;
    for name in [header::AUTHORIZATION, header::COOKIE] {
        h.update(name.as_str().as_bytes());
        for v in req.get_all(&name) {
            any = true;
            h.update([0u8]);
            h.update(v.as_bytes());
        }
        h.update([0xffu8]);
    }
    any.then(|| hex::encode(&h.finalize()[..16]))
}

/// One learned response.
#[derive(Debug)]
pub struct Learned {
    /// Status.
    pub status: u16,
    /// Head, as the client got it (framing and the gateway's own fields removed).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// When it was learned.
    pub learned_at: SystemTime,
    /// Path and query it answered.
    pub path: String,
    /// The request's values of the fields the response varies on.
    vary: Vec<(HeaderName, Option<HeaderValue>)>,
}

impl Learned {
    fn weight(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + head + self.path.len() + 128) as u64
    }

    /// Whether it may answer a request with headers `req` (`Vary`).
    fn selected_by(&self, req: &HeaderMap) -> bool {
        policy::vary_capture(&self.headers, req).is_some_and(|v| v == self.vary)
    }

    /// Seconds since it was learned.
    pub fn age_secs(&self) -> u64 {
        self.learned_at.elapsed().map_or(0, |d| d.as_secs())
    }
}

/// The learned store.
pub struct GhostStore {
    entries: moka::sync::Cache<String, Arc<Learned>>,
    /// Template → the most recently learned paths of it (newest last).
    templates: Mutex<HashMap<String, VecDeque<String>>>,
    max_templates: usize,
    /// Bodies larger than this are not learned.
    pub max_body: u64,
}

impl std::fmt::Debug for GhostStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GhostStore")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl GhostStore {
    /// A store bounded as `[origins]` says.
    pub fn new(cfg: &OriginsConfig) -> GhostStore {
        // Every entry weighs at least max_bytes / max_entries, so the byte bound is also an
        // entry bound.
        let floor = (cfg.ghost_max_bytes / cfg.ghost_max_entries.max(1)).max(1);
        GhostStore {
            entries: moka::sync::Cache::builder()
                .max_capacity(cfg.ghost_max_bytes)
                .weigher(move |_, v: &Arc<Learned>| {
                    v.weight().max(floor).try_into().unwrap_or(u32::MAX)
                })
                .build(),
            templates: Mutex::new(HashMap::new()),
            max_templates: cfg.ghost_max_entries.try_into().unwrap_or(usize::MAX),
            max_body: cfg.ghost_max_body_bytes,
        }
    }

    /// Learn `body` with `status` and `headers` as the answer to `key` (asked with headers
    /// `req`).
    pub fn learn(
        &self,
        key: &GhostKey,
        req: &HeaderMap,
        status: u16,
        mut headers: HeaderMap,
        body: Bytes,
    ) {
        if body.len() as u64 > self.max_body {
            return;
        }
        let Some(vary) = policy::vary_capture(&headers, req) else {
            return; // `Vary: *`: no request could be said to match.
        };
        for h in [
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
            header::AGE,
            header::CONNECTION,
        ] {
            headers.remove(h);
        }
        for h in ["x-cache-status", "x-ghost-source"] {
            headers.remove(h);
        }
        let exact = key.exact();
        self.entries.insert(
            exact,
            Arc::new(Learned {
                status,
                headers,
                body,
                learned_at: SystemTime::now(),
                path: key.path.clone(),
                vary,
            }),
        );
        let mut t = self.templates.lock();
        if t.len() >= self.max_templates && !t.contains_key(&key.template()) {
            // Forget one template's index (its responses stay reachable exactly).
            if let Some(k) = t.keys().next().cloned() {
                t.remove(&k);
            }
        }
        let paths = t.entry(key.template()).or_default();
        paths.retain(|p| p != &key.path);
        paths.push_back(key.path.clone());
        if paths.len() > PER_TEMPLATE {
            paths.pop_front();
        }
    }

    /// The response learned for exactly this request.
    pub fn exact(&self, key: &GhostKey, req: &HeaderMap) -> Option<Arc<Learned>> {
        self.entries
            .get(&key.exact())
            .filter(|l| l.selected_by(req))
    }

    /// For a request never seen: the learned response of the same template whose path is
    /// nearest (fewest differing pieces; the most recently learned among equals).
    pub fn nearest(&self, key: &GhostKey, req: &HeaderMap) -> Option<Arc<Learned>> {
        let paths: Vec<String> = self
            .templates
            .lock()
            .get(&key.template())?
            .iter()
            .rev()
            .cloned()
            .collect();
        let mut best: Option<(usize, Arc<Learned>)> = None;
        for path in paths {
            let k = GhostKey {
                path,
                ..key.clone()
            };
            let Some(l) = self.exact(&k, req) else {
                continue;
            };
            let d = template::distance(&key.path, &l.path);
            if best.as_ref().is_none_or(|(bd, _)| d < *bd) {
                best = Some((d, l));
            }
        }
        best.map(|(_, l)| l)
    }

    /// Responses held, and their weight in bytes.
    pub fn usage(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }
}

#[cfg(test)]
#[path = "ghost_tests.rs"]
mod tests;
