//! Cache warm-up (spec B-3): fetch a list of URLs into the HTTP cache before clients ask.
//!
//! URLs come from `warmup_urls` in `rules.toml` (at start-up) or from `velocache cache warm`.
//! Each is handed to the registered [`CacheAdmin::warm`](crate::admin::CacheAdmin::warm), which
//! fetches it through the daemon's own cache path, a few at a time. Progress is kept for
//! `stats` ([`WarmupProgress`]), counted in `velocache_warmup_urls_total{result}` and logged:
//! one line per URL and one when the run is over. Runs may overlap (start-up and an operator's
//! `cache warm`): their URLs add up in the same progress until the last one finishes.
use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::StreamExt as _;
use tracing::{info, warn};

use super::metrics::PlaneMetrics;
use crate::admin::{
    api::{WarmResult, WarmupProgress},
    seams::{AdminHub, CacheAdmin},
};

/// URLs fetched at the same time by one run.
const CONCURRENCY: usize = 4;
/// A URL that takes longer than this is counted as failed (the cache's own timeouts should
/// fire long before; this only keeps a stuck fetch from holding the run forever).
const URL_LIMIT: Duration = Duration::from_secs(600);

/// The warm-up runner.
pub struct Warmup {
    hub: AdminHub,
    metrics: PlaneMetrics,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    progress: WarmupProgress,
    runs: usize,
}

/// No HTTP cache is registered to fill.
#[derive(Debug, thiserror::Error)]
#[error("the HTTP cache is not available: nothing to warm")]
pub struct NoCache;

impl Warmup {
    /// A runner over whatever cache `hub` offers.
    pub fn new(hub: AdminHub, metrics: PlaneMetrics) -> Self {
        Warmup {
            hub,
            metrics,
            state: Mutex::new(State {
                progress: WarmupProgress {
                    state: "idle".into(),
                    ..WarmupProgress::default()
                },
                runs: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Progress of the current (or last) run.
    pub fn progress(&self) -> WarmupProgress {
        self.state().progress.clone()
    }

    /// Start a run in the background. Without a cache the progress says `unavailable` and the
    /// log says why.
    pub fn spawn(self: &Arc<Self>, urls: Vec<String>, trigger: &'static str) {
        match self.begin(&urls, trigger) {
            Ok(cache) => {
                let this = self.clone();
                tokio::spawn(async move {
                    this.fetch_all(cache, urls).await;
                });
            }
            Err(NoCache) => {
                warn!(
                    service = "http",
                    urls = urls.len(),
                    trigger,
                    "cache warm-up skipped: the HTTP cache is not available"
                );
                let mut st = self.state();
                if st.runs == 0 {
                    st.progress = WarmupProgress {
                        state: "unavailable".into(),
                        total: urls.len() as u64,
                        ..WarmupProgress::default()
                    };
                }
            }
        }
    }

    /// Run and wait for every URL.
    pub async fn run(
        &self,
        urls: Vec<String>,
        trigger: &'static str,
    ) -> Result<Vec<WarmResult>, NoCache> {
        let cache = self.begin(&urls, trigger)?;
        Ok(self.fetch_all(cache, urls).await)
    }

    fn begin(&self, urls: &[String], trigger: &str) -> Result<Arc<dyn CacheAdmin>, NoCache> {
        let cache = self.hub.cache().ok_or(NoCache)?;
        let mut st = self.state();
        if st.runs == 0 {
            st.progress = WarmupProgress::default();
        }
        st.runs += 1;
        st.progress.state = "running".into();
        st.progress.total += urls.len() as u64;
        info!(
            service = "http",
            urls = urls.len(),
            trigger,
            "cache warm-up started"
        );
        Ok(cache)
    }

    async fn fetch_all(&self, cache: Arc<dyn CacheAdmin>, urls: Vec<String>) -> Vec<WarmResult> {
        let results: Vec<WarmResult> = futures::stream::iter(urls)
            .map(|url| {
                let cache = cache.clone();
                async move {
                    let result = match tokio::time::timeout(URL_LIMIT, cache.warm(&url)).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => failed(&url, e.to_string()),
                        Err(_) => failed(&url, format!("no answer within {URL_LIMIT:?}")),
                    };
                    self.record(&result);
                    result
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut st = self.state();
        st.runs = st.runs.saturating_sub(1);
        if st.runs == 0 {
            st.progress.state = "done".into();
            let p = &st.progress;
            info!(
                service = "http",
                total = p.total,
                ok = p.ok,
                failed = p.failed,
                bytes = p.bytes,
                "cache warm-up finished"
            );
        }
        results
    }

    fn record(&self, r: &WarmResult) {
        let result = if r.ok { "ok" } else { "failed" };
        self.metrics
            .warmup_urls
            .get_or_create(&vec![("result".to_string(), result.to_string())])
            .inc();
        let mut st = self.state();
        let p = &mut st.progress;
        p.done += 1;
        p.bytes += r.bytes;
        if r.ok {
            p.ok += 1;
            info!(service = "http", url = %r.url, status = r.status, bytes = r.bytes,
                outcome = %r.outcome, done = p.done, total = p.total, "cache warm-up: URL done");
        } else {
            p.failed += 1;
            p.last_error = Some(format!(
                "{}: {}",
                r.url,
                r.error.as_deref().unwrap_or("failed")
            ));
            warn!(service = "http", url = %r.url, status = r.status, error = r.error.as_deref(),
                done = p.done, total = p.total, "cache warm-up: URL failed");
        }
    }
}

fn failed(url: &str, error: String) -> WarmResult {
    WarmResult {
        url: url.to_string(),
        ok: false,
        status: None,
        bytes: 0,
        outcome: "error".into(),
        error: Some(error),
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;

    use super::*;
    use crate::admin::{
        api::{CacheEntry, CacheListing, PurgeReport},
        seams::{AdminError, UrlPattern},
    };

    /// Records what it was asked to warm; `bad` URLs fail. Stands for the HTTP cache's
    /// implementation only to exercise the runner's bookkeeping.
    #[derive(Default)]
    struct Recorder {
        asked: Mutex<Vec<String>>,
    }

    impl CacheAdmin for Recorder {
        fn list(
            &self,
            _: Option<&UrlPattern>,
            _: usize,
        ) -> BoxFuture<'_, Result<CacheListing, AdminError>> {
            Box::pin(async { Err(AdminError::Failed("unused".into())) })
        }
        fn show(&self, _: &str) -> BoxFuture<'_, Result<CacheEntry, AdminError>> {
            Box::pin(async { Err(AdminError::Failed("unused".into())) })
        }
        fn purge(&self, _: &UrlPattern, _: bool) -> BoxFuture<'_, Result<PurgeReport, AdminError>> {
            Box::pin(async { Err(AdminError::Failed("unused".into())) })
        }
        fn warm(&self, url: &str) -> BoxFuture<'_, Result<WarmResult, AdminError>> {
            let url = url.to_string();
            Box::pin(async move {
                self.asked.lock().unwrap().push(url.clone());
                if url.contains("bad") {
                    return Err(AdminError::Failed("origin said 500".into()));
                }
                Ok(WarmResult {
                    url,
                    ok: true,
                    status: Some(200),
                    bytes: 10,
                    outcome: "stored".into(),
                    error: None,
                })
            })
        }
    }

    #[tokio::test]
    async fn without_a_cache_the_run_is_unavailable() {
        let w = Arc::new(Warmup::new(AdminHub::new(), PlaneMetrics::default()));
        assert!(w.run(vec!["http://a.lab/".into()], "test").await.is_err());
        w.spawn(vec!["http://a.lab/".into()], "test");
        let p = w.progress();
        assert_eq!(p.state, "unavailable");
        assert_eq!(p.total, 1);
    }

    #[tokio::test]
    async fn every_url_is_asked_and_counted() {
        let hub = AdminHub::new();
        let rec = Arc::new(Recorder::default());
        hub.register_cache(rec.clone());
        let metrics = PlaneMetrics::default();
        let w = Warmup::new(hub, metrics.clone());
        let urls: Vec<String> = (0..9)
            .map(|i| format!("http://a.lab/{}{i}", if i == 4 { "bad" } else { "ok" }))
            .collect();
        let results = w.run(urls.clone(), "test").await.unwrap();
        assert_eq!(results.len(), 9);
        let mut asked = rec.asked.lock().unwrap().clone();
        asked.sort();
        let mut want = urls;
        want.sort();
        assert_eq!(asked, want);
        let p = w.progress();
        assert_eq!(
            (p.state.as_str(), p.total, p.done, p.ok, p.failed, p.bytes),
            ("done", 9, 9, 8, 1, 80)
        );
        assert!(p.last_error.unwrap().contains("origin said 500"));
        let ok = metrics
            .warmup_urls
            .get_or_create(&vec![("result".into(), "ok".into())])
            .get();
        assert_eq!(ok, 8);
    }
}
