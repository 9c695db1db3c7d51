//! The HTTP cache as the admin API sees it: `velocache cache ls|show|purge|warm` and the
//! rules' `warmup_urls` come in through [`CacheAdmin`]; listings, purge reports and warm-up
//! results go out.
//!
//! URLs and cache keys: a key names the host, the original destination's address and the path
//! (`url:host@ip/path?q`), never the scheme. A URL given to `show` or `warm` is therefore
//! resolved the way a client would (the system resolver, port 80 or 443 by scheme) and keyed
//! under the same rules as a client's request; listings show each object as
//! `http://host/path`, and a purge pattern matches an object under either scheme or by its
//! key text (`sha256:…` for content-addressed objects).
//!
//! Warming sends a real GET through the proxy — over an in-memory connection, so it takes the
//! same phases, rules, collapsed forwarding and storage as a client's request — to the
//! resolved address, over TLS (through the TLS layer's origin client) for `https://` URLs.
use std::{net::SocketAddr, sync::Arc};

use futures::future::BoxFuture;
use http::{Request, Uri, header};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

use super::{
    ClientProtocol, Conn, OriginClient, Proxy, Scheme, answer::ERROR_PAGE_PREFIX, body::empty,
    store::HttpCache,
};
use crate::{
    admin::{
        AdminError, CacheAdmin, UrlPattern,
        api::{CacheEntry, CacheListing, PurgeReport, WarmResult},
    },
    cache::{Hit, KeyInput, ObjectId, ObjectKey, ObjectMeta},
    net::{ClientAddr, OrigDstAddr},
    rules::Facts,
};

/// How long a warm-up waits for the store to finish writing what it fetched.
const FILL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How much of the gateway's own error page a failed warm-up quotes.
const OWN_ANSWER_MAX: usize = 1024;

/// Makes the origin client a warm-up of an `https://` URL goes through: (address, SNI).
pub type HttpsOrigins = Arc<dyn Fn(SocketAddr, &str) -> Arc<dyn OriginClient> + Send + Sync>;

/// The daemon's proxy and cache, offered to the admin API.
pub struct ProxyCacheAdmin {
    proxy: Arc<Proxy>,
    https: Option<HttpsOrigins>,
}

impl ProxyCacheAdmin {
    /// Admin access to `proxy`'s cache; `https` warms `https://` URLs (none: refused).
    pub fn new(proxy: Arc<Proxy>, https: Option<HttpsOrigins>) -> ProxyCacheAdmin {
        ProxyCacheAdmin { proxy, https }
    }

    fn cache(&self) -> Result<&Arc<HttpCache>, AdminError> {
        self.proxy
            .cache()
            .ok_or_else(|| AdminError::Failed("caching is off ([http] cache = false)".into()))
    }
}

/// A URL taken apart: scheme, host (as a client would send it in `Host`), port, path+query.
struct Target {
    scheme: Scheme,
    host: String,
    port: u16,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, AdminError> {
        let bad = |why: &str| AdminError::BadRequest(format!("`{url}`: {why}"));
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err(bad("only http:// and https:// URLs")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        Ok(Target {
            scheme,
            // Never the userinfo: a `Host` header has none.
            host: authority
                .as_str()
                .rsplit_once('@')
                .map_or(authority.as_str(), |(_, h)| h)
                .to_string(),
            port,
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
        })
    }

    /// The host name or address without port and brackets.
    fn name(&self) -> &str {
        let h = self
            .host
            .rsplit_once('@')
            .map_or(self.host.as_str(), |(_, h)| h);
        if let Some(v6) = h.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6);
        }
        h.rsplit_once(':').map_or(h, |(n, _)| n)
    }

    async fn resolve(&self) -> Result<SocketAddr, AdminError> {
        let mut addrs = tokio::net::lookup_host((self.name(), self.port))
            .await
            .map_err(|e| AdminError::Failed(format!("resolving {}: {e}", self.name())))?;
        addrs
            .next()
            .ok_or_else(|| AdminError::Failed(format!("{} has no address", self.name())))
    }
}

impl ProxyCacheAdmin {
    /// The key a client's GET of `target` at `dst` gets, under the rules in force.
    fn key_for(&self, target: &Target, dst: SocketAddr) -> ObjectKey {
        let rules = self.proxy.rules().current();
        let path = target.path_and_query.split('?').next().unwrap_or("/");
        let facts = Facts {
            service: target.scheme.service(),
            host: &target.host,
            path: Some(path),
            method: Some("GET"),
            content_type: None,
        };
        let opts = rules
            .evaluate(&facts)
            .map(|d| d.rule.cache_key.clone())
            .unwrap_or_default();
        ObjectKey::derive(
            KeyInput {
                host: &target.host,
                dst,
                path_and_query: &target.path_and_query,
            },
            &opts,
        )
    }

    async fn warm_one(&self, url: &str) -> Result<WarmResult, AdminError> {
        let cache = self.cache()?.clone();
        let target = Target::parse(url)?;
        let dst = target.resolve().await?;
        let proxy = match target.scheme {
            Scheme::Http => self.proxy.clone(),
            Scheme::Https => {
                let https = self.https.as_ref().ok_or_else(|| {
                    AdminError::Failed("HTTPS is off: https:// URLs cannot be warmed".into())
                })?;
                self.proxy.with_origin(https(dst, target.name()))
            }
        };
        let (ours, theirs) = tokio::io::duplex(256 * 1024);
        let conn = Conn {
            scheme: target.scheme,
            client: ClientAddr(SocketAddr::from(([127, 0, 0, 1], 0))),
            orig_dst: OrigDstAddr(dst),
        };
        tokio::spawn(proxy.serve(theirs, conn, ClientProtocol::Http1));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(ours))
            .await
            .map_err(|e| AdminError::Failed(format!("warm-up connection: {e}")))?;
        tokio::spawn(connection);
        let req = Request::get(target.path_and_query.as_str())
            .header(header::HOST, target.host.as_str())
            .header(header::USER_AGENT, "velocache-warmup")
            .body(empty())
            .map_err(|e| AdminError::BadRequest(format!("`{url}`: {e}")))?;
        let failed = |error: String| WarmResult {
            url: url.to_string(),
            ok: false,
            status: None,
            bytes: 0,
            outcome: "failed".into(),
            error: Some(error),
        };
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Ok(failed(e.to_string())),
        };
        let status = resp.status().as_u16();
        let served = resp
            .headers()
            .get("x-cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("bypass")
            .to_string();
        // Everything the proxy relays or serves from the cache carries its `Via`; a response
        // without one is the gateway's own (an error page, a `deny` rule), whose short body
        // says what went wrong — better than blaming the origin for a 502 it never sent.
        let own_answer = !resp.headers().contains_key(header::VIA);
        let mut own_text = Vec::new();
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        bytes += d.len() as u64;
                        if own_answer && own_text.len() < OWN_ANSWER_MAX {
                            own_text.extend_from_slice(d);
                        }
                    }
                }
                Err(e) => {
                    let mut r = failed(format!("body: {e}"));
                    r.status = Some(status);
                    r.bytes = bytes;
                    return Ok(r);
                }
            }
        }
        let key = self.key_for(&target, dst);
        // The body reached us before the store committed its last slice: wait for the fill.
        if let Some(fill) = cache.lock.current(&key.id) {
            let mut rx = fill.subscribe();
            let _ = tokio::time::timeout(FILL_WAIT, rx.wait_for(|s| s.end.is_some())).await;
        }
        let stored = matches!(cache.storage.lookup(&key.id).await, Ok(Some(s)) if s.complete());
        let outcome = match (served.as_str(), stored) {
            ("hit", true) => "fresh",
            ("revalidated", true) => "revalidated",
            (_, true) => "stored",
            ("bypass", false) => "not_cacheable",
            (_, false) => "not_stored",
        };
        Ok(WarmResult {
            url: url.to_string(),
            ok: stored,
            status: Some(status),
            bytes,
            outcome: outcome.into(),
            error: (!stored && status >= 400).then(|| {
                if own_answer {
                    let text = String::from_utf8_lossy(&own_text);
                    let text = text.trim();
                    format!(
                        "the gateway answered {status}: {}",
                        text.strip_prefix(ERROR_PAGE_PREFIX).unwrap_or(text)
                    )
                } else {
                    format!("the origin answered {status}")
                }
            }),
        })
    }
}

/// How an object is shown: `http://host/path` for URL keys, the key itself otherwise.
fn url_of(key: &str) -> String {
    match key.strip_prefix("url:") {
        Some(rest) => match rest.split_once('@') {
            // `host@ip[:port]/path`: the port after the address is the one the URL had.
            Some((host, at)) => {
                let (addr, path) = match at.find('/') {
                    Some(i) => at.split_at(i),
                    None => (at, "/"),
                };
                let port = if addr.starts_with('[') {
                    addr.rsplit_once("]:").map(|(_, p)| p)
                } else {
                    addr.rsplit_once(':').map(|(_, p)| p)
                };
                match port {
                    Some(p) => format!("http://{host}:{p}{path}"),
                    None => format!("http://{host}{path}"),
                }
            }
            None => format!("http://{rest}"),
        },
        None => key.to_string(),
    }
}

fn matches(pattern: &UrlPattern, key: &str) -> bool {
    let url = url_of(key);
    pattern.matches(&url)
        || url
            .strip_prefix("http://")
            .is_some_and(|rest| pattern.matches(&format!("https://{rest}")))
        || pattern.matches(key)
}

fn entry(meta: &ObjectMeta, snap: &Hit) -> CacheEntry {
    let url = url_of(&meta.key);
    let header = |name: header::HeaderName| {
        meta.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut details = std::collections::BTreeMap::new();
    if let Some(e) = header(header::ETAG) {
        details.insert("etag".into(), e);
    }
    if let Some(l) = header(header::LAST_MODIFIED) {
        details.insert("last_modified".into(), l);
    }
    details.insert("complete".into(), snap.complete().to_string());
    if let Some(n) = meta.slices() {
        details.insert(
            "slices".into(),
            format!("{}/{n}", snap.present.count().min(n)),
        );
    }
    if meta.sha256.is_some() {
        details.insert("verified".into(), meta.verified.to_string());
    }
    let fresh_until = meta.response_time + meta.lifetime.saturating_sub(meta.initial_age);
    CacheEntry {
        key: (url != meta.key).then(|| meta.key.clone()),
        url,
        status: meta.status,
        size_bytes: meta.len.unwrap_or(0),
        content_type: header(header::CONTENT_TYPE),
        stored_at: Some(meta.response_time),
        fresh_until: Some(fresh_until),
        hits: Some(snap.hits),
        details,
    }
}

impl CacheAdmin for ProxyCacheAdmin {
    fn list(
        &self,
        pattern: Option<&UrlPattern>,
        limit: usize,
    ) -> BoxFuture<'_, Result<CacheListing, AdminError>> {
        let result = self.cache().map(|cache| {
            let mut all: Vec<_> = cache
                .storage
                .list()
                .into_iter()
                .filter(|(_, s)| pattern.is_none_or(|p| matches(p, &s.meta.key)))
                .collect();
            all.sort_by_key(|(_, s)| std::cmp::Reverse(s.meta.response_time));
            CacheListing {
                total: all.len() as u64,
                entries: all
                    .iter()
                    .take(limit)
                    .map(|(_, s)| entry(&s.meta, s))
                    .collect(),
            }
        });
        Box::pin(async move { result })
    }

    fn show(&self, url: &str) -> BoxFuture<'_, Result<CacheEntry, AdminError>> {
        let url = url.to_string();
        Box::pin(async move {
            let cache = self.cache()?;
            let pattern = UrlPattern::new(&url)?;
            // Keyed as a client's request would be; else any stored object shown as this URL.
            if let Ok(target) = Target::parse(&url)
                && let Ok(dst) = target.resolve().await
                && let Ok(Some(s)) = cache.storage.lookup(&self.key_for(&target, dst).id).await
            {
                return Ok(entry(&s.meta, &s));
            }
            cache
                .storage
                .list()
                .into_iter()
                .find(|(_, s)| matches(&pattern, &s.meta.key))
                .map(|(_, s)| entry(&s.meta, &s))
                .ok_or_else(|| AdminError::NotFound(format!("{url} is not in the cache")))
        })
    }

    fn purge(
        &self,
        pattern: &UrlPattern,
        shared: bool,
    ) -> BoxFuture<'_, Result<PurgeReport, AdminError>> {
        let pattern = pattern.clone();
        Box::pin(async move {
            let cache = self.cache()?;
            let tier = match (&cache.shared, shared) {
                (Some(t), true) => Some(t.clone()),
                (None, true) => {
                    return Err(AdminError::BadRequest(
                        "no shared tier is configured ([shared] redis)".into(),
                    ));
                }
                (_, false) => None,
            };
            let doomed: Vec<_> = cache
                .storage
                .list()
                .into_iter()
                .filter(|(_, s)| matches(&pattern, &s.meta.key))
                .collect();
            let mut report = PurgeReport {
                pattern: pattern.as_str().to_string(),
                purged: 0,
                bytes: 0,
                shared: 0,
            };
            let mut failures = Vec::new();
            if let Some(tier) = &tier {
                // What other gateways stored may not be here: an exact URL is purged by its key.
                let mut ids: Vec<ObjectId> = doomed.iter().map(|(id, _)| *id).collect();
                if let Some(url) = pattern.exact()
                    && let Ok(target) = Target::parse(url)
                    && let Ok(dst) = target.resolve().await
                {
                    ids.push(self.key_for(&target, dst).id);
                }
                ids.sort_unstable_by_key(|id| id.0);
                ids.dedup();
                for id in ids {
                    if tier.purge_shared(id).await {
                        report.shared += 1;
                    } else {
                        failures.push(format!("{id}: the shared tier cannot be reached"));
                    }
                }
            }
            for (id, snap) in doomed {
                // The RAM tier too: nothing of a purged object may outlive the purge.
                cache.hot.invalidate(&(id, snap.meta.version));
                match cache.storage.remove(id).await {
                    Ok(()) => {
                        report.purged += 1;
                        report.bytes += snap.meta.len.unwrap_or(0);
                    }
                    Err(e) => failures.push(format!("{}: {e}", url_of(&snap.meta.key))),
                }
            }
            cache.publish_usage();
            tracing::info!(
                service = "http",
                pattern = pattern.as_str(),
                purged = report.purged,
                bytes = report.bytes,
                shared = report.shared,
                "cache purged"
            );
            if !failures.is_empty() {
                return Err(AdminError::Failed(format!(
                    "purged {} objects; could not remove {}",
                    report.purged,
                    failures.join(", ")
                )));
            }
            Ok(report)
        })
    }

    fn warm(&self, url: &str) -> BoxFuture<'_, Result<WarmResult, AdminError>> {
        let url = url.to_string();
        Box::pin(async move { self.warm_one(&url).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shown_as_urls_and_patterns_match_either_scheme() {
        assert_eq!(
            url_of("url:example.com@192.0.2.1/a/b?x=1"),
            "http://example.com/a/b?x=1"
        );
        assert_eq!(
            url_of("url:example.com@192.0.2.1:8080/a"),
            "http://example.com:8080/a"
        );
        assert_eq!(
            url_of("url:v6.example@[2001:db8::1]:81/"),
            "http://v6.example:81/"
        );
        assert_eq!(
            url_of("url:v6.example@[2001:db8::1]/z"),
            "http://v6.example/z"
        );
        assert_eq!(url_of("sha256:ab"), "sha256:ab");
        let key = "url:example.com@192.0.2.1/pkg/a.deb";
        for p in [
            "http://example.com/pkg/a.deb",
            "https://example.com/pkg/a.deb",
            "https://example.com/pkg/*",
            "*.deb",
            key,
        ] {
            assert!(matches(&UrlPattern::new(p).unwrap(), key), "{p}");
        }
        assert!(!matches(
            &UrlPattern::new("http://example.com/pkg/b.deb").unwrap(),
            key
        ));
    }

    #[test]
    fn urls_are_taken_apart_like_a_client_would() {
        let t = Target::parse("https://Example.com:8443/a?b=1").unwrap();
        assert_eq!(
            (t.scheme, t.name(), t.port, t.path_and_query.as_str()),
            (Scheme::Https, "Example.com", 8443, "/a?b=1")
        );
        let t = Target::parse("http://[2001:db8::1]/").unwrap();
        assert_eq!((t.name(), t.port), ("2001:db8::1", 80));
        let t = Target::parse("http://user:pw@example.com/x").unwrap();
        assert_eq!((t.host.as_str(), t.name()), ("example.com", "example.com"));
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("/relative").is_err());
    }
}
