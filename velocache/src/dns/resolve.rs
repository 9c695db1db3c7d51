//! The miss path: ask upstream once per question, store, fall back to stale answers.
//!
//! [`Inner::answer_miss`] is what a client waiting on a miss runs. Identical misses collapse:
//! the first becomes the leader and registers a `watch` channel under the cache key; later ones
//! wait on it and render the leader's answer for themselves (their own ID, spelling, EDNS). If
//! the leader's task disappears, followers fetch for themselves. A failed fetch (all upstreams
//! timed out, refused the connection or said SERVFAIL) falls back to an expired entry still in
//! the stale window, served with `stale_answer_ttl` (RFC 8767); without one the client gets
//! SERVFAIL. Prefetch refreshes run the same fetch in the background.
use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use tokio::sync::watch;

use super::{
    cache::{CachedAnswer, Lookup, TtlMode},
    forwarder::{Inner, Outcome, RuleVerdict, Served, Target, log_query, verdict},
    handler::{Request, Transport},
    upstream::{ExchangeError, Reply, exchange_plain, exchange_tcp},
    wire::{self, QueryView, WireError, rcode},
};
use crate::rules::{Action, RuleSet};

/// Why a fetch produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No upstream answered.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The answer could not be read.
    #[error("unreadable answer from {upstream}: {source}")]
    BadAnswer {
        /// Upstream.
        upstream: String,
        /// What was wrong.
        #[source]
        source: WireError,
    },
}

/// Removes an in-flight registration when the leader finishes or is dropped.
struct Flight<'a> {
    inner: &'a Inner,
    key: &'a [u8],
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.inner.inflight.lock() {
            map.remove(self.key);
        }
    }
}

enum Role {
    Leader(watch::Sender<Option<Outcome>>),
    Follower(watch::Receiver<Option<Outcome>>),
}

impl Inner {
    /// Answer a query that missed (or found only an expired entry).
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the pieces are what the forwarder already holds"
    )]
    pub(super) async fn answer_miss(
        &self,
        req: &Request,
        q: &QueryView,
        key: &[u8],
        target: Target,
        rules: Arc<RuleSet>,
        v: RuleVerdict,
        start: Instant,
    ) -> Vec<u8> {
        let (outcome, collapsed) = self.fetch_shared(key, req, q, target, &rules, &v).await;
        self.stats.misses.inc();
        if collapsed {
            self.stats.collapsed.inc();
        }
        let max_len = match req.transport {
            Transport::Udp => q.max_udp_answer(),
            Transport::Tcp => usize::from(u16::MAX),
        };
        let (out, code, served, upstream) = match &outcome {
            Outcome::Answer(entry, served) => {
                let mode = match served {
                    Served::Stale => TtlMode::Fixed(self.settings.stale_answer_ttl),
                    _ => TtlMode::Age(entry.age(Instant::now())),
                };
                if *served == Served::Stale {
                    self.stats.stale.inc();
                }
                (
                    entry.render(&req.bytes, q, mode, max_len),
                    entry.rcode,
                    *served,
                    entry.upstream.to_string(),
                )
            }
            Outcome::Failed(why) => {
                tracing::debug!(client = %req.client, error = %why, "no upstream answered");
                (
                    wire::reply(&req.bytes, q, rcode::SERVFAIL, |_| 0),
                    rcode::SERVFAIL,
                    Served::Miss,
                    String::new(),
                )
            }
        };
        if code == rcode::SERVFAIL {
            self.stats.errors.inc();
        }
        let latency = start.elapsed();
        self.stats.miss_latency.observe(latency.as_secs_f64());
        log_query(
            self.live.get(),
            req,
            q.qtype,
            code,
            served,
            latency,
            &upstream,
            v.rule.as_deref(),
        );
        out
    }

    /// Join an identical fetch in flight, or lead one. Returns whether it joined.
    async fn fetch_shared(
        &self,
        key: &[u8],
        req: &Request,
        q: &QueryView,
        target: Target,
        rules: &Arc<RuleSet>,
        v: &RuleVerdict,
    ) -> (Outcome, bool) {
        let role = match self.inflight.lock() {
            Ok(mut map) => match map.get(key) {
                Some(rx) => Role::Follower(rx.clone()),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.into(), rx);
                    Role::Leader(tx)
                }
            },
            // A poisoned table only costs the collapsing.
            Err(_) => Role::Leader(watch::channel(None).0),
        };
        let tx = match role {
            Role::Follower(mut rx) => {
                let shared = rx
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|o| o.clone());
                if let Some(o) = shared {
                    return (o, true);
                }
                // The leader went away without an answer: fetch alone.
                None
            }
            Role::Leader(tx) => Some(tx),
        };
        let _flight = tx.as_ref().map(|_| Flight { inner: self, key });
        let outcome = self.fetch_or_stale(key, req, q, target, rules, v).await;
        if let Some(tx) = tx {
            let _ = tx.send(Some(outcome.clone()));
        }
        (outcome, false)
    }

    async fn fetch_or_stale(
        &self,
        key: &[u8],
        req: &Request,
        q: &QueryView,
        target: Target,
        rules: &Arc<RuleSet>,
        v: &RuleVerdict,
    ) -> Outcome {
        let fetched = self
            .fetch(
                key,
                req,
                q,
                target,
                rules,
                v.ttl_override,
                v.rewrite.as_deref(),
            )
            .await;
        match fetched {
            Ok(entry) if entry.rcode != rcode::SERVFAIL => {
                return Outcome::Answer(entry, Served::Miss);
            }
            Ok(_) => {}
            Err(ref e) => tracing::debug!(error = %e, "fetch failed"),
        }
        if let Lookup::Stale(entry) = self.cache.get(key, Instant::now()) {
            return Outcome::Answer(entry, Served::Stale);
        }
        match fetched {
            Ok(entry) => Outcome::Answer(entry, Served::Miss),
            Err(e) => Outcome::Failed(e.to_string().into()),
        }
    }

    /// Ask upstream for `q`'s question (or a plugin's `rewrite` of it) with our own query, and
    /// store the answer.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the pieces are what the miss path already holds"
    )]
    async fn fetch(
        &self,
        key: &[u8],
        req: &Request,
        q: &QueryView,
        target: Target,
        rules: &Arc<RuleSet>,
        ttl_override: Option<u32>,
        rewrite: Option<&[u8]>,
    ) -> Result<Arc<CachedAnswer>, FetchError> {
        let question = rewrite.unwrap_or_else(|| q.question(&req.bytes));
        let query = wire::upstream_query(question, q.checking_disabled(), q.dnssec_ok());
        let mut reply = self.exchange(&query, target, true).await.inspect_err(|_| {
            self.stats.upstream_failures.inc();
        })?;
        if rewrite.is_some() {
            // The client sees its own question, and the records for the name asked as its own.
            reply.bytes =
                super::plugin_hook::answer_as(&reply.bytes, &req.bytes).map_err(|source| {
                    FetchError::BadAnswer {
                        upstream: reply.upstream.to_string(),
                        source,
                    }
                })?;
        }
        tracing::debug!(
            qname = %wire::name_text(&req.bytes, wire::HEADER_LEN),
            upstream = %reply.upstream,
            transport = reply.transport,
            rcode = rcode::name((wire::get16(&reply.bytes, 2) & 0x000f) as u8),
            bytes = reply.bytes.len(),
            "upstream answer"
        );
        let layout = wire::scan_answer(&reply.bytes).map_err(|source| {
            self.stats.upstream_failures.inc();
            FetchError::BadAnswer {
                upstream: reply.upstream.to_string(),
                source,
            }
        })?;
        let mut entry = CachedAnswer::from_upstream(
            reply.bytes,
            &layout,
            &self.settings.policy,
            ttl_override,
            reply.upstream,
            Arc::downgrade(rules),
        );
        entry.plugin = rewrite.is_some();
        let entry = Arc::new(entry);
        self.cache.insert(key, entry.clone());
        if let Some(kernel) = self.kernel.get() {
            kernel.forget(key);
        }
        self.stats.entries.set(self.cache.entries() as i64);
        Ok(entry)
    }

    async fn exchange(
        &self,
        query: &[u8],
        target: Target,
        tcp_fallback: bool,
    ) -> Result<Reply, ExchangeError> {
        let timeout = self.settings.upstream_timeout;
        match (target, &self.upstreams) {
            (Target::Pool, Some(pool)) => pool.query(query, tcp_fallback).await,
            (Target::Pool, None) => Err(ExchangeError::NoUpstream),
            (Target::Direct(addr), _) => {
                exchange_plain(
                    addr,
                    query,
                    timeout,
                    &self.stats.dropped_replies,
                    tcp_fallback,
                )
                .await
            }
        }
    }

    /// A background refresh of `old` (prefetch before expiry, or after a stale answer).
    pub(super) async fn prefetch(
        &self,
        req: &Request,
        q: &QueryView,
        key: &[u8],
        target: Target,
        old: &Arc<CachedAnswer>,
    ) {
        let start = Instant::now();
        let rules = self.rules.current();
        let v = verdict(&rules, &req.bytes);
        if matches!(
            v.action,
            Some(Action::Deny | Action::Passthrough | Action::InterceptNoCache)
        ) {
            return;
        }
        self.stats.prefetches.inc();
        let (outcome, _) = self.fetch_shared(key, req, q, target, &rules, &v).await;
        let (code, upstream) = match &outcome {
            Outcome::Answer(e, Served::Miss) => (e.rcode, e.upstream.to_string()),
            _ => {
                // Let a later hit try again.
                old.refreshing.store(false, Ordering::Release);
                (rcode::SERVFAIL, String::new())
            }
        };
        log_query(
            self.live.get(),
            req,
            q.qtype,
            code,
            Served::Prefetch,
            start.elapsed(),
            &upstream,
            v.rule.as_deref(),
        );
    }

    /// Forward the client's message as it is (new ID on the way up, theirs on the way back),
    /// cache nothing.
    pub(super) async fn verbatim(
        &self,
        req: &Request,
        target: Target,
        qtype: u16,
        start: Instant,
        rule: Option<String>,
    ) -> Option<Vec<u8>> {
        // Over UDP a truncated reply goes back as it is and the client retries over TCP, where
        // we ask over TCP too.
        let result = match (req.transport, target) {
            (Transport::Tcp, Target::Direct(addr)) => {
                exchange_tcp(addr, &req.bytes, self.settings.upstream_timeout).await
            }
            (Transport::Tcp, t) => self.exchange(&req.bytes, t, true).await,
            (Transport::Udp, t) => self.exchange(&req.bytes, t, false).await,
        };
        let (out, code, upstream) = match result {
            Ok(mut reply) => {
                reply.bytes[0..2].copy_from_slice(&req.bytes[0..2]);
                let code = (wire::get16(&reply.bytes, 2) & 0x000f) as u8;
                (Some(reply.bytes), code, reply.upstream.to_string())
            }
            Err(e) => {
                self.stats.upstream_failures.inc();
                self.stats.errors.inc();
                tracing::debug!(client = %req.client, error = %e, "verbatim forward failed");
                (
                    wire::bare_error(&req.bytes, rcode::SERVFAIL),
                    rcode::SERVFAIL,
                    String::new(),
                )
            }
        };
        let latency = start.elapsed();
        self.stats.miss_latency.observe(latency.as_secs_f64());
        log_query(
            self.live.get(),
            req,
            qtype,
            code,
            Served::None,
            latency,
            &upstream,
            rule.as_deref(),
        );
        out
    }
}
