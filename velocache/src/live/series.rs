//! The dashboard's charts: the last hour as a ring of fixed intervals.
//!
//! Every published [`Record`] is counted into the open interval (requests, hits, bytes from the
//! cache and from origins, DNS queries and their latency, SIP messages, bytes per host and per
//! client). Every [`INTERVAL`] the feed's task closes it into a [`Point`], adding what only the
//! control plane knows ([`Extra`]: kernel counters, active calls and their MOS). The ring holds
//! [`POINTS`] points; top hosts and clients are summed over the points kept, from each point's
//! own top list (bounded, so a scan of a million hosts cannot grow the ring).
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::record::{Record, kind};

/// One point's span.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Points kept: one hour.
pub const POINTS: usize = 720;
/// Hosts and clients a point remembers.
const TOP_PER_POINT: usize = 20;
/// Hosts and clients the charts list.
const TOP: usize = 10;
/// Upper bounds of the DNS latency histogram's buckets, microseconds (a last bucket is open).
pub const DNS_BUCKETS_US: [u64; 10] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000,
];

/// What the control plane adds to a point.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Extra {
    /// SIP calls in progress.
    pub active_calls: u64,
    /// Mean MOS of the calls in progress that have one.
    pub mos: Option<f64>,
    /// Kernel counters (name, value) as read at the interval's end (monotonic: the page
    /// shows their rate).
    pub kernel: Vec<(String, u64)>,
}

/// One interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Point {
    /// The interval's end, Unix ms.
    pub ts_ms: u64,
    /// HTTP(S) requests.
    pub requests: u64,
    /// Of which answered from the cache.
    pub hits: u64,
    /// Body bytes sent from the cache.
    pub bytes_cache: u64,
    /// Body bytes sent from origins.
    pub bytes_origin: u64,
    /// DNS queries (hits included).
    pub dns_queries: u64,
    /// Of which answered from a cache (daemon or kernel).
    pub dns_hits: u64,
    /// SIP messages.
    pub sip_messages: u64,
    /// TLS flows.
    pub tls_flows: u64,
    /// Control-plane figures.
    pub extra: Extra,
    /// The interval's busiest hosts by bytes.
    pub top_hosts: Vec<(String, u64)>,
    /// Its busiest clients by bytes.
    pub top_clients: Vec<(String, u64)>,
    /// DNS latency histogram (counts per [`DNS_BUCKETS_US`] bucket, plus the open one).
    pub dns_latency: Vec<u64>,
}

/// `GET /v1/analytics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Analytics {
    /// Seconds per point.
    pub interval_secs: u64,
    /// The points, oldest first (at most an hour).
    pub points: Vec<Point>,
    /// Hit ratio over the points (0–1), requests answered from the cache / all.
    pub hit_ratio: f64,
    /// Bytes the cache sent over the points (what the uplink did not carry).
    pub bytes_saved: u64,
    /// Busiest hosts by bytes over the points.
    pub top_hosts: Vec<(String, u64)>,
    /// Busiest clients by bytes over the points.
    pub top_clients: Vec<(String, u64)>,
    /// The DNS latency buckets' upper bounds, µs.
    pub dns_buckets_us: Vec<u64>,
    /// DNS latency histogram over the points.
    pub dns_latency: Vec<u64>,
}

#[derive(Default)]
pub(super) struct Series {
    open: Point,
    hosts: HashMap<String, u64>,
    clients: HashMap<String, u64>,
    points: VecDeque<Point>,
}

fn top(map: impl IntoIterator<Item = (String, u64)>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<_> = map.into_iter().collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn client_ip(client: &str) -> &str {
    // `ip:port`, `[v6]:port` or a bare address.
    if let Some(rest) = client.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match client.rsplit_once(':') {
        Some((ip, _)) if !ip.contains(':') => ip,
        _ => client,
    }
}

impl Series {
    pub(super) fn count(&mut self, r: &Record) {
        let p = &mut self.open;
        match r.service.as_str() {
            kind::HTTP | kind::HTTPS => {
                p.requests += 1;
                let from_cache = matches!(
                    r.cache.as_str(),
                    "hit" | "revalidated" | "stale" | "ghost" | "ghost-nearest"
                );
                if from_cache {
                    p.hits += 1;
                    p.bytes_cache += r.bytes;
                } else {
                    p.bytes_origin += r.bytes;
                }
                if r.bytes > 0 {
                    *self.hosts.entry(r.host.clone()).or_default() += r.bytes;
                    *self
                        .clients
                        .entry(client_ip(&r.client).to_string())
                        .or_default() += r.bytes;
                }
            }
            kind::DNS => {
                let n = r.count.max(1);
                p.dns_queries += n;
                if matches!(r.cache.as_str(), "hit" | "kernel_hit" | "stale") {
                    p.dns_hits += n;
                }
                if p.dns_latency.len() != DNS_BUCKETS_US.len() + 1 {
                    p.dns_latency = vec![0; DNS_BUCKETS_US.len() + 1];
                }
                let bucket = DNS_BUCKETS_US
                    .iter()
                    .position(|b| r.duration_us <= *b)
                    .unwrap_or(DNS_BUCKETS_US.len());
                if let Some(c) = p.dns_latency.get_mut(bucket) {
                    *c += n;
                }
            }
            kind::SIP => p.sip_messages += 1,
            kind::TLS => p.tls_flows += 1,
            _ => {}
        }
    }

    pub(super) fn close(&mut self, ts_ms: u64, extra: Extra) {
        let mut p = std::mem::take(&mut self.open);
        p.ts_ms = ts_ms;
        p.extra = extra;
        p.top_hosts = top(self.hosts.drain(), TOP_PER_POINT);
        p.top_clients = top(self.clients.drain(), TOP_PER_POINT);
        if p.dns_latency.is_empty() {
            p.dns_latency = vec![0; DNS_BUCKETS_US.len() + 1];
        }
        if self.points.len() == POINTS {
            self.points.pop_front();
        }
        self.points.push_back(p);
    }

    pub(super) fn analytics(&self) -> Analytics {
        let mut hosts: HashMap<String, u64> = HashMap::new();
        let mut clients: HashMap<String, u64> = HashMap::new();
        let mut latency = vec![0; DNS_BUCKETS_US.len() + 1];
        let (mut requests, mut hits, mut saved) = (0u64, 0u64, 0u64);
        for p in &self.points {
            requests += p.requests;
            hits += p.hits;
            saved += p.bytes_cache;
            for (h, b) in &p.top_hosts {
                *hosts.entry(h.clone()).or_default() += b;
            }
            for (c, b) in &p.top_clients {
                *clients.entry(c.clone()).or_default() += b;
            }
            for (sum, c) in latency.iter_mut().zip(&p.dns_latency) {
                *sum += c;
            }
        }
        Analytics {
            interval_secs: INTERVAL.as_secs(),
            points: self.points.iter().cloned().collect(),
            hit_ratio: if requests == 0 {
                0.0
            } else {
                hits as f64 / requests as f64
            },
            bytes_saved: saved,
            top_hosts: top(hosts, TOP),
            top_clients: top(clients, TOP),
            dns_buckets_us: DNS_BUCKETS_US.to_vec(),
            dns_latency: latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(host: &str, client: &str, cache: &str, bytes: u64) -> Record {
        Record {
            service: kind::HTTP.into(),
            host: host.into(),
            client: client.into(),
            cache: cache.into(),
            bytes,
            count: 1,
            ..Record::default()
        }
    }

    #[test]
    fn intervals_sum_hits_bytes_and_top_hosts() {
        let mut s = Series::default();
        s.count(&http("a.lab", "10.0.0.2:4000", "hit", 100));
        s.count(&http("b.lab", "10.0.0.2:4001", "miss", 300));
        s.count(&http("a.lab", "[fd00::2]:4000", "revalidated", 50));
        s.close(1000, Extra::default());
        s.count(&http("a.lab", "10.0.0.3:1", "hit", 10));
        s.close(2000, Extra::default());
        let a = s.analytics();
        assert_eq!(a.points.len(), 2);
        assert_eq!(a.points[0].requests, 3);
        assert_eq!(a.points[0].hits, 2);
        assert_eq!(a.points[0].bytes_cache, 150);
        assert_eq!(a.points[0].bytes_origin, 300);
        assert!((a.hit_ratio - 0.75).abs() < 1e-9);
        assert_eq!(a.bytes_saved, 160);
        assert_eq!(a.top_hosts[0], ("b.lab".into(), 300));
        assert_eq!(a.top_hosts[1], ("a.lab".into(), 160));
        assert_eq!(a.top_clients[0], ("10.0.0.2".into(), 400));
        assert!(a.top_clients.contains(&("fd00::2".into(), 50)));
    }

    #[test]
    fn dns_summaries_count_every_query_they_stand_for() {
        let mut s = Series::default();
        s.count(&Record {
            service: kind::DNS.into(),
            cache: "hit".into(),
            count: 40,
            duration_us: 80,
            ..Record::default()
        });
        s.count(&Record {
            service: kind::DNS.into(),
            cache: "miss".into(),
            count: 1,
            duration_us: 3_000_000,
            ..Record::default()
        });
        s.close(1, Extra::default());
        let a = s.analytics();
        assert_eq!(a.points[0].dns_queries, 41);
        assert_eq!(a.points[0].dns_hits, 40);
        assert_eq!(a.dns_latency[0], 40);
        assert_eq!(a.dns_latency[DNS_BUCKETS_US.len()], 1);
    }

    #[test]
    fn the_ring_keeps_one_hour() {
        let mut s = Series::default();
        for i in 0..(POINTS as u64 + 10) {
            s.close(i, Extra::default());
        }
        let a = s.analytics();
        assert_eq!(a.points.len(), POINTS);
        assert_eq!(a.points[0].ts_ms, 10);
    }
}
