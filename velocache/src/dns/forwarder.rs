//! The caching forwarder: the [`RequestHandler`] behind both DNS front ends.
//!
//! A request's path: [`QueryView::parse`] (fast) or [`wire::classify`] (hickory, for anything
//! unusual) → cache lookup by [`KeyBuf`] → a fresh hit whose rules are still the ones in force
//! is rendered and returned at once, with no allocation besides the answer itself. Everything
//! else consults `rules.toml` (`deny` → a local NXDOMAIN or 0.0.0.0/::, `passthrough` → forward
//! without caching, `ttl_override`) and then goes upstream as a [`Response::Pending`] future
//! (see `resolve.rs`): misses, expired entries (served stale if no upstream answers), and
//! queries the cache cannot take. Each query leaves one log line: `debug` for hits and local
//! answers, `info` for misses and errors.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use hickory_proto::rr::RecordType;
use tokio::sync::watch;

use super::{
    cache::{AnswerCache, CachedAnswer, KeyBuf, Lookup, TtlMode, TtlPolicy},
    handler::{Request, RequestHandler, Response, Transport},
    plugin_hook::PluginStep,
    stats::DnsStats,
    upstream::UpstreamPool,
    wire::{self, Classified, HEADER_LEN, QueryView, rcode},
};
use crate::{
    config::DenyAnswer,
    rules::{Action, Facts, RuleSet, Rules},
};

/// Largest DNS message over TCP.
const MAX_TCP_MESSAGE: usize = 65_535;

/// Prefetch: refresh an entry in the background when it is popular and about to expire.
#[derive(Debug, Clone, Copy)]
pub struct Prefetch {
    /// Hits an entry needs before it is prefetched.
    pub min_hits: u32,
    /// Refresh once less than this share of its TTL (in percent) is left.
    pub percent: u32,
}

/// What the forwarder is told at start-up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// TTL clamps.
    pub policy: TtlPolicy,
    /// TTL written into stale answers (RFC 8767 recommends 30).
    pub stale_answer_ttl: u32,
    /// Prefetch, when enabled.
    pub prefetch: Option<Prefetch>,
    /// What a `deny` rule answers.
    pub deny_answer: DenyAnswer,
    /// How long one upstream may take.
    pub upstream_timeout: Duration,
    /// A name answered locally with an IPv4 address: the TLS layer's CA page
    /// (`[tls] ca_page_host` → `ca_page_address`), so that a client using any resolver reaches
    /// it through the gateway without configuration.
    pub local_name: Option<LocalName>,
}

/// A name the forwarder answers itself.
#[derive(Debug, Clone)]
pub struct LocalName {
    /// The name in wire format (labels, final zero); compared without regard to case.
    pub wire: Vec<u8>,
    /// Its A record.
    pub addr: std::net::Ipv4Addr,
}

impl LocalName {
    /// `name` (dotted, trailing dot optional) answered with `addr`; `None` if not a valid name.
    pub fn new(name: &str, addr: std::net::Ipv4Addr) -> Option<LocalName> {
        use hickory_proto::serialize::binary::BinEncodable as _;
        let mut name = hickory_proto::rr::Name::from_ascii(name).ok()?;
        name.set_fqdn(true);
        Some(LocalName {
            wire: name.to_bytes().ok()?,
            addr,
        })
    }
}

/// How a query was served, as logged in `cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From a fresh entry.
    Hit,
    /// Asked upstream.
    Miss,
    /// From an expired entry, no upstream answering.
    Stale,
    /// A background refresh.
    Prefetch,
    /// Not through the cache (rules, errors, unusual messages).
    None,
}

impl Served {
    /// The logged value.
    pub fn name(self) -> &'static str {
        match self {
            Served::Hit => "hit",
            Served::Miss => "miss",
            Served::Stale => "stale",
            Served::Prefetch => "prefetch",
            Served::None => "none",
        }
    }
}

/// A shared upstream result (what collapsed followers receive).
#[derive(Clone)]
pub(super) enum Outcome {
    /// An answer (fresh from upstream, or stale from the cache).
    Answer(Arc<CachedAnswer>, Served),
    /// Nobody answered; the reason.
    Failed(Arc<str>),
}

/// Where a query goes upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// The configured upstreams.
    Pool,
    /// The resolver the client asked (no upstreams configured).
    Direct(SocketAddr),
}

/// Fetches in flight, by cache key: followers wait on the leader's channel.
pub(super) type Inflight = Mutex<HashMap<Box<[u8]>, watch::Receiver<Option<Outcome>>>>;

/// The forwarder's state, shared with the tasks it spawns.
pub(super) struct Inner {
    pub(super) cache: AnswerCache,
    pub(super) upstreams: Option<UpstreamPool>,
    pub(super) rules: Rules,
    pub(super) settings: Settings,
    pub(super) inflight: Inflight,
    pub(super) stats: DnsStats,
    pub(super) pending: super::budget::Budget,
    /// Kernel answers, when the XDP slot is claimed (set once, after construction).
    pub(super) kernel: std::sync::OnceLock<Arc<super::kernel::KernelAnswers>>,
    /// The plugin set (`plugin_hook`), when the service was given one.
    pub(super) plugins: std::sync::OnceLock<crate::plugins::Plugins>,
    /// The dashboard's live feed, when it is on.
    pub(super) live: std::sync::OnceLock<crate::live::Live>,
}

/// The caching forwarder.
#[derive(Clone)]
pub struct Forwarder {
    pub(super) inner: Arc<Inner>,
}

/// What a rule said about a name.
pub(super) struct RuleVerdict {
    pub(super) action: Option<Action>,
    pub(super) ttl_override: Option<u32>,
    pub(super) rule: Option<String>,
    /// A plugin's rewrite: the question to ask upstream instead of the client's.
    pub(super) rewrite: Option<Box<[u8]>>,
}

pub(super) fn verdict(rules: &RuleSet, msg: &[u8]) -> RuleVerdict {
    if rules.rules.is_empty() {
        return RuleVerdict {
            action: None,
            ttl_override: None,
            rule: None,
            rewrite: None,
        };
    }
    let qname = wire::name_text(msg, HEADER_LEN);
    match rules.evaluate(&Facts::dns(&qname)) {
        Some(d) => RuleVerdict {
            action: Some(d.action),
            ttl_override: d
                .ttl_override
                .map(|t| t.as_secs().min(u64::from(u32::MAX)) as u32),
            rule: Some(d.rule.name.clone()),
            rewrite: None,
        },
        None => RuleVerdict {
            action: None,
            ttl_override: None,
            rule: None,
            rewrite: None,
        },
    }
}

/// One log line per query: `debug` for hits and local answers, `info` for the rest; and the
/// query into the live feed when it is on.
#[expect(
    clippy::too_many_arguments,
    reason = "every answer path passes what it has; a struct per query would cost the hit path"
)]
pub(super) fn log_query(
    live: Option<&crate::live::Live>,
    req: &Request,
    qtype: u16,
    code: u8,
    served: Served,
    latency: Duration,
    upstream: &str,
    rule: Option<&str>,
) {
    let quiet = matches!(served, Served::Hit | Served::None)
        && !matches!(code, rcode::SERVFAIL | rcode::FORMERR);
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                client = %req.client,
                orig_dst = %req.orig_dst,
                transport = req.transport.name(),
                qname = %wire::name_text(&req.bytes, HEADER_LEN),
                qtype = %RecordType::from(qtype),
                rcode = rcode::name(code),
                cache = served.name(),
                latency_us = latency.as_micros() as u64,
                upstream,
                rule,
                "query"
            )
        };
    }
    if quiet {
        line!(debug);
    } else {
        line!(info);
    }
    if let Some(live) = live {
        publish(live, req, qtype, code, served, latency, upstream, rule);
    }
}

/// A query into the live feed: a hit into the second's sums, anything else as its own record.
#[expect(
    clippy::too_many_arguments,
    reason = "the same facts as the log line, passed as they are"
)]
fn publish(
    live: &crate::live::Live,
    req: &Request,
    qtype: u16,
    code: u8,
    served: Served,
    latency: Duration,
    upstream: &str,
    rule: Option<&str>,
) {
    let qname = wire::name_text(&req.bytes, HEADER_LEN).to_string();
    let qtype = RecordType::from(qtype).to_string();
    let latency_us = latency.as_micros() as u64;
    if matches!(served, Served::Hit) && rule.is_none() {
        live.dns_hit(
            req.client.0.ip(),
            &qname,
            &qtype,
            served.name(),
            rcode::name(code),
            latency_us,
        );
        return;
    }
    let mut detail = vec![
        ("transport".to_string(), req.transport.name().to_string()),
        ("orig_dst".to_string(), req.orig_dst.to_string()),
    ];
    if !upstream.is_empty() {
        detail.push(("upstream".into(), upstream.to_string()));
    }
    live.publish(crate::live::Record {
        service: crate::live::kind::DNS.into(),
        client: req.client.to_string(),
        host: qname,
        what: qtype,
        status: rcode::name(code).to_string(),
        cache: served.name().to_string(),
        duration_us: latency_us,
        rule: rule.unwrap_or_default().to_string(),
        direction: req.transport.name().to_string(),
        detail,
        ..crate::live::Record::default()
    });
}

impl Forwarder {
    /// A forwarder over `cache`, asking `upstreams` (None: each client's own resolver).
    pub fn new(
        cache: AnswerCache,
        upstreams: Option<UpstreamPool>,
        rules: Rules,
        settings: Settings,
        stats: DnsStats,
        max_pending: usize,
    ) -> Self {
        Forwarder {
            inner: Arc::new(Inner {
                cache,
                upstreams,
                rules,
                settings,
                inflight: Mutex::new(HashMap::new()),
                stats,
                pending: super::budget::Budget::new(max_pending),
                kernel: std::sync::OnceLock::new(),
                plugins: std::sync::OnceLock::new(),
                live: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Hand hot entries to the kernel from now on (the XDP `Dns` slot's daemon side).
    pub fn set_kernel(&self, kernel: Arc<super::kernel::KernelAnswers>) {
        let _ = self.inner.kernel.set(kernel);
    }

    /// Ask `plugins` about every query from now on (the `dns` hook, before the cache).
    pub fn set_plugins(&self, plugins: crate::plugins::Plugins) {
        let _ = self.inner.plugins.set(plugins);
    }

    /// Publish every query into the dashboard's live feed (hits summed per second).
    pub fn set_live(&self, live: crate::live::Live) {
        let _ = self.inner.live.set(live);
    }

    /// The cache (for the admin API and tests).
    pub fn cache(&self) -> &AnswerCache {
        &self.inner.cache
    }

    fn target(&self, req: &Request) -> Target {
        match self.inner.upstreams {
            Some(_) => Target::Pool,
            None => Target::Direct(req.orig_dst.0),
        }
    }

    pub(super) fn max_len(req: &Request, q: &QueryView) -> usize {
        match req.transport {
            Transport::Udp => q.max_udp_answer(),
            Transport::Tcp => MAX_TCP_MESSAGE,
        }
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the hit path passes what it already has rather than build a struct per query"
    )]
    fn serve_hit(
        &self,
        req: &Request,
        q: &QueryView,
        entry: &Arc<CachedAnswer>,
        age: u32,
        start: Instant,
        key: &KeyBuf,
        rule: Option<&str>,
    ) -> Vec<u8> {
        let inner = &self.inner;
        let out = entry.render(&req.bytes, q, TtlMode::Age(age), Self::max_len(req, q));
        let latency = start.elapsed();
        inner.stats.hits.inc();
        inner.stats.hit_latency.observe(latency.as_secs_f64());
        log_query(
            inner.live.get(),
            req,
            q.qtype,
            entry.rcode,
            Served::Hit,
            latency,
            &entry.upstream,
            rule,
        );
        let hits = entry.hits.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(kernel) = inner.kernel.get()
            && req.transport == Transport::Udp
            && hits >= kernel.min_hits()
        {
            kernel.offer(req, q, entry, key.as_slice());
        }
        if let Some(p) = inner.settings.prefetch {
            let left = u64::from(entry.ttl.saturating_sub(age));
            if hits >= p.min_hits
                && left * 100 <= u64::from(entry.ttl) * u64::from(p.percent)
                && !entry.refreshing.swap(true, Ordering::AcqRel)
            {
                self.refresh(req, q, key.as_slice(), entry.clone());
            }
        }
        out
    }

    /// Everything the fast path did not take.
    fn slow_path(&self, req: Request, start: Instant) -> Response {
        let inner = &self.inner;
        match wire::classify(&req.bytes) {
            Classified::Drop => {
                inner.stats.malformed.inc();
                tracing::debug!(client = %req.client, len = req.bytes.len(), "message dropped: too short or a response");
                Response::Drop
            }
            Classified::FormErr(reason) => {
                inner.stats.malformed.inc();
                inner.stats.errors.inc();
                tracing::info!(client = %req.client, orig_dst = %req.orig_dst, transport = req.transport.name(), len = req.bytes.len(), reason, rcode = "FORMERR", "malformed query");
                match wire::bare_error(&req.bytes, rcode::FORMERR) {
                    Some(out) => Response::Ready(out),
                    None => Response::Drop,
                }
            }
            Classified::Foreign => {
                // Not a query (NOTIFY, UPDATE, …): it belongs to the server it was sent to.
                let target = Target::Direct(req.orig_dst.0);
                self.forward_verbatim(req, target, 0, start, None)
            }
            Classified::Unusual { qname, qtype } => {
                let v = verdict(&inner.rules.current(), &req.bytes);
                if v.action == Some(Action::Deny) {
                    inner.stats.denied.inc();
                    tracing::debug!(client = %req.client, qname, "denied (unusual query shape)");
                    return match wire::bare_error(&req.bytes, rcode::NXDOMAIN) {
                        Some(out) => Response::Ready(out),
                        None => Response::Drop,
                    };
                }
                let target = self.target(&req);
                self.forward_verbatim(req, target, qtype, start, v.rule)
            }
        }
    }

    fn forward_verbatim(
        &self,
        req: Request,
        target: Target,
        qtype: u16,
        start: Instant,
        rule: Option<String>,
    ) -> Response {
        let Some(permit) = self.inner.pending.try_acquire(target) else {
            self.inner.stats.errors.inc();
            return match wire::bare_error(&req.bytes, rcode::SERVFAIL) {
                Some(out) => Response::Ready(out),
                None => Response::Drop,
            };
        };
        self.inner.stats.uncached.inc();
        let inner = self.inner.clone();
        Response::Pending(Box::pin(async move {
            let out = inner.verbatim(&req, target, qtype, start, rule).await;
            drop(permit);
            out
        }))
    }
}

impl RequestHandler for Forwarder {
    fn handle(&self, req: Request) -> Response {
        let start = Instant::now();
        let q = match QueryView::parse(&req.bytes) {
            Ok(q) => q,
            Err(_) => return self.slow_path(req, start),
        };
        let inner = &self.inner;
        let resolver = inner.upstreams.is_none().then(|| req.orig_dst.0.ip());
        let key = KeyBuf::new(&req.bytes, &q, resolver);
        let rules = inner.rules.current();
        let lookup = inner.cache.get(key.as_slice(), start);
        if let Lookup::Fresh(entry, age) = &lookup
            && std::ptr::eq(entry.rules.as_ptr(), Arc::as_ptr(&rules))
            && !self.plugins_see_hit(&req)
        {
            return Response::Ready(self.serve_hit(&req, &q, entry, *age, start, &key, None));
        }
        if let Some(local) = &inner.settings.local_name
            && q.qname(&req.bytes).eq_ignore_ascii_case(&local.wire)
        {
            return self.local_name_answer(&req, &q, local.addr, start);
        }
        let fresh = matches!(lookup, Lookup::Fresh(..));
        let rewrite = match self.plugin_step(&req, &q, fresh, start) {
            PluginStep::Pass => None,
            PluginStep::Done(answer) => return answer,
            PluginStep::Rewrite { question, plugin } => Some((question, plugin)),
        };
        let mut v = verdict(&rules, &req.bytes);
        if let Some((question, plugin)) = rewrite {
            v.rewrite = Some(question);
            if v.rule.is_none() {
                v.rule = Some(plugin);
            }
        }
        match v.action {
            Some(Action::Deny) => {
                return self.local_answer(&req, &q, v.ttl_override, start, v.rule.as_deref());
            }
            Some(Action::Passthrough | Action::InterceptNoCache) => {
                let target = self.target(&req);
                return self.forward_verbatim(req, target, q.qtype, start, v.rule);
            }
            Some(Action::Cache) | None => {}
        }
        let stale = match lookup {
            Lookup::Fresh(entry, age) => {
                return Response::Ready(self.serve_hit(
                    &req,
                    &q,
                    &entry,
                    age,
                    start,
                    &key,
                    v.rule.as_deref(),
                ));
            }
            Lookup::Stale(entry) => Some(entry),
            Lookup::Miss => None,
        };
        // No upstream is healthy: answer stale at once, refresh in the background.
        if let (Some(entry), Some(pool)) = (&stale, &inner.upstreams)
            && pool.all_down()
        {
            return Response::Ready(self.serve_stale_now(&req, &q, entry, start, &key));
        }
        let target = self.target(&req);
        let Some(permit) = inner.pending.try_acquire(target) else {
            return self.servfail_now(&req, &q, start, "too many queries in flight");
        };
        let inner = inner.clone();
        let key: Box<[u8]> = key.as_slice().into();
        Response::Pending(Box::pin(async move {
            let out = inner
                .answer_miss(&req, &q, &key, target, rules, v, start)
                .await;
            drop(permit);
            Some(out)
        }))
    }
}

impl Forwarder {
    fn serve_stale_now(
        &self,
        req: &Request,
        q: &QueryView,
        entry: &Arc<CachedAnswer>,
        start: Instant,
        key: &KeyBuf,
    ) -> Vec<u8> {
        let inner = &self.inner;
        let out = entry.render(
            &req.bytes,
            q,
            TtlMode::Fixed(inner.settings.stale_answer_ttl),
            Self::max_len(req, q),
        );
        inner.stats.stale.inc();
        let latency = start.elapsed();
        inner.stats.miss_latency.observe(latency.as_secs_f64());
        log_query(
            self.inner.live.get(),
            req,
            q.qtype,
            entry.rcode,
            Served::Stale,
            latency,
            &entry.upstream,
            None,
        );
        if !entry.refreshing.swap(true, Ordering::AcqRel) {
            self.refresh(req, q, key.as_slice(), entry.clone());
        }
        out
    }

    /// Refresh `entry` in the background (prefetch, or a stale entry while upstreams are down).
    fn refresh(&self, req: &Request, q: &QueryView, key: &[u8], entry: Arc<CachedAnswer>) {
        // A plugin's rewrite asked another name: a refresh would ask the client's. The entry
        // expires instead, and the next query goes through the plugins again.
        if entry.plugin {
            entry.refreshing.store(false, Ordering::Release);
            return;
        }
        let target = self.target(req);
        let Some(permit) = self.inner.pending.try_acquire(target) else {
            entry.refreshing.store(false, Ordering::Release);
            return;
        };
        let inner = self.inner.clone();
        let key: Box<[u8]> = key.into();
        let req = req.clone();
        let q = *q;
        tokio::spawn(async move {
            inner.prefetch(&req, &q, &key, target, &entry).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
#[path = "forwarder_tests.rs"]
mod tests;
