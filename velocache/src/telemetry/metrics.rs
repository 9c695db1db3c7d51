//! The one shape in which metrics are registered: a component keeps a struct of metric handles
//! and builds it with `Struct::register(registry, …)`, creating each handle through a
//! [`MetricSet`] over the registry (its sub-registry: `velocache_<service>_…`). The hot path then
//! only touches atomics; the admin API exports the registry.
use prometheus_client::{
    collector::Collector,
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};

/// Creates metrics and registers them as it goes.
pub struct MetricSet<'a> {
    registry: &'a mut Registry,
}

impl<'a> MetricSet<'a> {
    /// Register into `registry`.
    pub fn new(registry: &'a mut Registry) -> Self {
        MetricSet { registry }
    }

    /// A counter (`<name>_total`).
    pub fn counter(&mut self, name: &str, help: &str) -> Counter {
        let c = Counter::default();
        self.registry.register(name, help, c.clone());
        c
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str) -> Gauge {
        let g = Gauge::default();
        self.registry.register(name, help, g.clone());
        g
    }

    /// A family of counters by label set.
    pub fn counters<L>(&mut self, name: &str, help: &str) -> Family<L, Counter>
    where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let f = Family::<L, Counter>::default();
        self.registry.register(name, help, f.clone());
        f
    }

    /// A family of histograms by label set, each with `buckets`.
    pub fn histograms<L>(
        &mut self,
        name: &str,
        help: &str,
        buckets: fn() -> Histogram,
    ) -> Family<L, Histogram, fn() -> Histogram>
    where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let f = Family::<L, Histogram, fn() -> Histogram>::new_with_constructor(buckets);
        self.registry.register(name, help, f.clone());
        f
    }

    /// An info metric (`<name>_info`).
    pub fn info(&mut self, name: &str, help: &str, labels: Vec<(&'static str, &'static str)>) {
        self.registry.register(name, help, Info::new(labels));
    }

    /// A collector read at every scrape (state that lives elsewhere: kernel counters, flows).
    pub fn collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }
}
