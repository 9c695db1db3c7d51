//! The live feed: what the gateway is doing right now, for the web dashboard and the CLI.
//!
//! Services publish a [`Record`] per request, query, SIP message or TLS flow into the one
//! [`Live`] the admin hub holds (only when `[admin] web_listen` is set: otherwise there is no
//! feed and publishing is a `None` check). A record enters three places at once:
//! - a bounded history (the last `capacity` records), read by `GET /v1/live/history` and by the
//!   rule editor's dry run;
//! - nothing else for readers: a WebSocket reader ([`Reader`]) asks the history, a few times a
//!   second, for what came after the last sequence number it saw ([`Live::since`]), at most a
//!   bounded number of the newest; the gap between the numbers is what it missed, and it is
//!   told how many (`{"dropped": n}`). Publishing does the same work whether ten browsers
//!   watch or none, never waits for one, and a slow browser only falls further behind;
//! - the current analytics interval ([`series`]), closed every few seconds into a point of the
//!   last hour's charts.
//!
//! DNS hits are too many to show one by one: the forwarder hands them to [`Live::dns_hit`],
//! which sums them per client, name, type and result, and [`Live::tick`] publishes one record per
//! sum each second (`count` says how many queries it stands for). HTTP(S) requests also leave
//! their heads, as the inspector shows them, in a bounded [`Exchange`] store keyed by trace id.
pub mod record;
pub mod series;

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use prometheus_client::{metrics::counter::Counter, registry::Registry};

pub use record::{Dropped, Exchange, History, Record, WsMessage, kind};
pub use series::{Analytics, Extra, Point};

/// Records the history keeps unless configured.
pub const DEFAULT_HISTORY: usize = 5000;
/// Inspector exchanges kept.
const EXCHANGES: usize = 2000;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A sum of DNS hits waiting for the next tick.
#[derive(Debug, Default)]
struct HitSum {
    count: u64,
    latency_us: u64,
    rcode: String,
}

struct Inner {
    capacity: usize,
    seq: AtomicU64,
    history: Mutex<VecDeque<Arc<Record>>>,
    exchanges: Mutex<VecDeque<Arc<Exchange>>>,
    hits: Mutex<HashMap<(IpAddr, String, String, String), HitSum>>,
    readers: std::sync::atomic::AtomicUsize,
    series: Mutex<series::Series>,
    published: Counter,
    dropped: Counter,
}

/// The feed. Cloning shares it.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("capacity", &self.inner.capacity)
            .field("published", &self.inner.published.get())
            .finish()
    }
}

/// One WebSocket reader's place in the feed: the last sequence number it was given, and how
/// many records it missed. Counted in `History::subscribers` while it lives.
pub struct Reader {
    live: Live,
    last: u64,
    dropped: u64,
}

impl Reader {
    /// The records published since the last call (at most `max`, the newest), oldest first;
    /// the ones passed over count as dropped.
    pub fn next_batch(&mut self, max: usize) -> Vec<Arc<Record>> {
        let (records, skipped) = self.live.since(self.last, max);
        if let Some(r) = records.last() {
            self.last = r.seq;
        }
        if skipped > 0 {
            self.dropped += skipped;
            self.live.inner.dropped.inc_by(skipped);
        }
        records
    }

    /// Records this reader missed so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.live.inner.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Live {
    /// A feed keeping the last `capacity` records; its counters go into `registry`
    /// (`velocache_live_records_total`, `velocache_live_dropped_total`).
    pub fn new(capacity: usize, registry: &mut Registry) -> Live {
        let live = Live::unregistered(capacity);
        registry.register(
            "live_records",
            "Records published to the live feed",
            live.inner.published.clone(),
        );
        registry.register(
            "live_dropped",
            "Live records dropped for WebSocket readers that read too slowly",
            live.inner.dropped.clone(),
        );
        live
    }

    /// A feed whose counters are not exported (tests, tools).
    pub fn unregistered(capacity: usize) -> Live {
        let capacity = capacity.max(1);
        Live {
            inner: Arc::new(Inner {
                capacity,
                seq: AtomicU64::new(0),
                history: Mutex::new(VecDeque::with_capacity(capacity.min(65536))),
                exchanges: Mutex::new(VecDeque::with_capacity(EXCHANGES)),
                hits: Mutex::new(HashMap::new()),
                readers: std::sync::atomic::AtomicUsize::new(0),
                series: Mutex::new(series::Series::default()),
                published: Counter::default(),
                dropped: Counter::default(),
            }),
        }
    }

    /// Publish one record: `seq` and (if zero) `ts_ms` are filled in.
    pub fn publish(&self, mut record: Record) {
        let inner = &self.inner;
        if record.ts_ms == 0 {
            record.ts_ms = now_ms();
        }
        if record.count == 0 {
            record.count = 1;
        }
        inner.series.lock().count(&record);
        // The sequence number is taken under the history's lock, so the history is in order and
        // a reader's gap in the numbers is exactly what it missed.
        {
            let mut history = inner.history.lock();
            record.seq = inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
            if history.len() == inner.capacity {
                history.pop_front();
            }
            history.push_back(Arc::new(record));
        }
        inner.published.inc();
    }

    /// The records published after sequence number `after`, at most `max` of them (the
    /// newest), oldest first; and how many newer than `after` are not among them (passed over,
    /// or already gone from the history).
    pub fn since(&self, after: u64, max: usize) -> (Vec<Arc<Record>>, u64) {
        let h = self.inner.history.lock();
        let Some(newest) = h.back().map(|r| r.seq) else {
            return (Vec::new(), 0);
        };
        if newest <= after {
            return (Vec::new(), 0);
        }
        let new = newest - after;
        let take = (new.min(max as u64) as usize).min(h.len());
        let records: Vec<Arc<Record>> = h.range(h.len() - take..).cloned().collect();
        (records, new - take as u64)
    }

    /// A DNS answer from the cache: summed, published by the next [`Live::tick`].
    pub fn dns_hit(
        &self,
        client: IpAddr,
        qname: &str,
        qtype: &str,
        cache: &str,
        rcode: &str,
        latency_us: u64,
    ) {
        let mut hits = self.inner.hits.lock();
        let sum = hits
            .entry((
                client,
                qname.to_string(),
                qtype.to_string(),
                cache.to_string(),
            ))
            .or_default();
        sum.count += 1;
        sum.latency_us += latency_us;
        if sum.rcode.is_empty() {
            sum.rcode = rcode.to_string();
        }
    }

    /// Publish the DNS hit sums (every second, from the feed's task).
    pub fn flush_hits(&self) {
        let sums = std::mem::take(&mut *self.inner.hits.lock());
        for ((client, qname, qtype, cache), sum) in sums {
            self.publish(Record {
                service: kind::DNS.into(),
                client: client.to_string(),
                host: qname,
                what: qtype,
                status: sum.rcode,
                cache,
                duration_us: sum.latency_us / sum.count.max(1),
                count: sum.count,
                ..Record::default()
            });
        }
    }

    /// Keep one request's exchange for the inspector.
    pub fn store_exchange(&self, exchange: Exchange) {
        let mut ex = self.inner.exchanges.lock();
        if ex.len() == EXCHANGES {
            ex.pop_front();
        }
        ex.push_back(Arc::new(exchange));
    }

    /// The exchange with this trace id, if still kept.
    pub fn exchange(&self, id: &str) -> Option<Arc<Exchange>> {
        self.inner
            .exchanges
            .lock()
            .iter()
            .rev()
            .find(|e| e.id == id)
            .cloned()
    }

    /// The last `limit` records (0: all kept), oldest first.
    pub fn history(&self, limit: usize) -> History {
        let records: Vec<Record> = {
            let h = self.inner.history.lock();
            let skip = if limit == 0 {
                0
            } else {
                h.len().saturating_sub(limit)
            };
            h.iter().skip(skip).map(|r| (**r).clone()).collect()
        };
        History {
            records,
            capacity: self.inner.capacity,
            published: self.inner.published.get(),
            dropped: self.inner.dropped.get(),
            subscribers: self.inner.readers.load(Ordering::Relaxed),
        }
    }

    /// A new reader of the records published from now on.
    pub fn reader(&self) -> Reader {
        self.inner.readers.fetch_add(1, Ordering::Relaxed);
        Reader {
            live: self.clone(),
            last: self.inner.seq.load(Ordering::Relaxed),
            dropped: 0,
        }
    }

    /// Close the analytics interval into a point (with what only the control plane knows:
    /// kernel counters, calls) — every [`series::INTERVAL`].
    pub fn close_interval(&self, extra: Extra) {
        self.inner.series.lock().close(now_ms(), extra);
    }

    /// The last hour's charts.
    pub fn analytics(&self) -> Analytics {
        self.inner.series.lock().analytics()
    }
}

#[cfg(test)]
mod tests;
