//! The live feed: what the gateway is doing right now, for the web dashboard and the CLI.
//!
//! Services publish a [`Record`] per request, query, SIP message or TLS flow into the one
//! [`Live`] the admin hub holds (only when `[admin] web_listen` is set: otherwise there is no
//! feed and publishing is a `None` check). A record enters three places at once:
//! - a bounded history (the last `capacity` records), read by `GET /v1/live/history` and by the
//!   rule editor's dry run;
//! - a broadcast channel every WebSocket reader subscribes to. A reader that falls behind loses
//!   the oldest records and is told how many (`{"dropped": n}`): publishing never waits, so a
//!   slow browser never slows the daemon;
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
use tokio::sync::broadcast;

pub use record::{Dropped, Exchange, History, Record, WsMessage, kind};
pub use series::{Analytics, Extra, Point};

/// Records the history keeps unless configured.
pub const DEFAULT_HISTORY: usize = 5000;
/// Inspector exchanges kept.
const EXCHANGES: usize = 2000;
/// Records a WebSocket reader may lag before it loses the oldest.
const CHANNEL: usize = 4096;

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
    tx: broadcast::Sender<Arc<Record>>,
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

/// One WebSocket reader's view of the feed.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Record>>,
    live: Live,
    dropped: u64,
}

/// What [`Subscription::next`] yields.
pub enum Next {
    /// The next record.
    Record(Arc<Record>),
    /// The reader fell behind: this many records are lost for it (its total so far).
    Dropped(u64),
    /// The feed is gone (the daemon is stopping).
    Closed,
}

impl Subscription {
    /// Wait for the next record.
    pub async fn next(&mut self) -> Next {
        match self.rx.recv().await {
            Ok(r) => Next::Record(r),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                self.dropped += n;
                self.live.inner.dropped.inc_by(n);
                Next::Dropped(self.dropped)
            }
            Err(broadcast::error::RecvError::Closed) => Next::Closed,
        }
    }

    /// The next record if one is waiting, without waiting: `None` when there is none.
    pub fn try_next(&mut self) -> Option<Next> {
        match self.rx.try_recv() {
            Ok(r) => Some(Next::Record(r)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                self.dropped += n;
                self.live.inner.dropped.inc_by(n);
                Some(Next::Dropped(self.dropped))
            }
            Err(broadcast::error::TryRecvError::Empty) => None,
            Err(broadcast::error::TryRecvError::Closed) => Some(Next::Closed),
        }
    }

    /// The reader passes over a record it was given (a rate limit): counted as dropped.
    pub fn skip(&mut self) {
        self.dropped += 1;
        self.live.inner.dropped.inc();
    }

    /// Records dropped for this reader so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
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
        let (tx, _) = broadcast::channel(CHANNEL);
        Live {
            inner: Arc::new(Inner {
                capacity,
                seq: AtomicU64::new(0),
                history: Mutex::new(VecDeque::with_capacity(capacity.min(65536))),
                exchanges: Mutex::new(VecDeque::with_capacity(EXCHANGES)),
                hits: Mutex::new(HashMap::new()),
                tx,
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
        // The sequence number is taken under the history's lock so that the history and the
        // channel see records in the same order.
        let record = {
            let mut history = inner.history.lock();
            record.seq = inner.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let record = Arc::new(record);
            if history.len() == inner.capacity {
                history.pop_front();
            }
            history.push_back(record.clone());
            record
        };
        inner.published.inc();
        // No reader: nothing to do (an error only says so).
        let _ = inner.tx.send(record);
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
            subscribers: self.inner.tx.receiver_count(),
        }
    }

    /// A new reader of the records published from now on.
    pub fn subscribe(&self) -> Subscription {
        Subscription {
            rx: self.inner.tx.subscribe(),
            live: self.clone(),
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
