//! A `tracing` layer that writes one JSON object per event.
//!
//! Field order is fixed so that lines are easy to scan: `timestamp`, `level`, `service`,
//! `message`, then the fields of enclosing spans (outermost first, so a request span's
//! `trace_id` and `client` appear on every line inside it), then the event's own fields.
//! `service` is the event's `service` field if it has one, else a span's, else the daemon module
//! that emitted it (`velocache::dns::cache` → `dns`).
use std::{
    fmt,
    io::{self, Write},
    sync::Mutex,
};

use serde_json::{Map, Value};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_log::NormalizeEvent;
use tracing_subscriber::{Layer, layer::Context, registry::LookupSpan};

/// Where lines go; stdout in the daemon, a buffer in tests.
type Sink = Box<dyn Write + Send>;

/// The JSON line layer.
pub struct JsonLayer {
    sink: Mutex<Sink>,
}

impl JsonLayer {
    /// A layer writing to stdout.
    pub fn stdout() -> Self {
        Self::new(Box::new(io::stdout()))
    }

    /// A layer writing to any sink.
    pub fn new(sink: Sink) -> Self {
        JsonLayer {
            sink: Mutex::new(sink),
        }
    }
}

/// Fields collected from a span or event.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        // `log` records bridged by tracing-log carry their metadata as `log.*` fields; the
        // normalized metadata already says where they came from.
        if !field.name().starts_with("log.") {
            self.0.insert(field.name().into(), value);
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        // `tags` carries fields whose names are not known in advance (a plugin's, on a flow
        // line) as one JSON object: it is written as that object, not as a string.
        let object = (field.name() == "tags")
            .then(|| serde_json::from_str::<Value>(value).ok())
            .flatten()
            .filter(Value::is_object);
        self.put(field, object.unwrap_or_else(|| Value::from(value)));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // Keep the whole cause chain: "connect failed: connection refused".
        self.put(field, Value::from(super::error_chain(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

/// The service a target belongs to: `velocache::dns::cache` → `dns`. Kernel programs log under
/// their own module names (aya-log), which all belong to the datapath.
pub fn service_of_target(target: &str) -> &str {
    let mut parts = target.split("::");
    let first = parts.next().unwrap_or(target);
    if first != "velocache" && first != "velocache_ebpf" {
        return first;
    }
    match parts.next() {
        None => "velocache",
        Some("ingress" | "parse" | "maps" | "rtp_fastpath") => "datapath",
        Some(module) => module,
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut own = Fields::default();
        event.record(&mut own);

        let mut scope_fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<Fields>() {
                    for (k, v) in &f.0 {
                        scope_fields.insert(k.clone(), v.clone());
                    }
                }
            }
        }

        let mut line = Map::new();
        let timestamp = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        line.insert("timestamp".into(), Value::from(timestamp));
        line.insert(
            "level".into(),
            Value::from(meta.level().as_str().to_ascii_lowercase()),
        );
        let service = own
            .0
            .shift_remove("service")
            .or_else(|| scope_fields.shift_remove("service"))
            .unwrap_or_else(|| Value::from(service_of_target(meta.target())));
        line.insert("service".into(), service);
        let message = own.0.shift_remove("message").unwrap_or(Value::from(""));
        line.insert("message".into(), message);
        for (k, v) in scope_fields {
            line.insert(k, v);
        }
        for (k, v) in own.0 {
            line.insert(k, v);
        }
        line.insert("target".into(), Value::from(meta.target()));

        let mut bytes = match serde_json::to_vec(&Value::Object(line)) {
            Ok(b) => b,
            Err(_) => return,
        };
        bytes.push(b'\n');
        if let Ok(mut sink) = self.sink.lock() {
            // A log line that cannot be written has nowhere better to go.
            let _ = sink.write_all(&bytes);
            let _ = sink.flush();
        }
    }
}

/// The JSON lines `f` logs, parsed (for tests of what other modules log).
#[cfg(test)]
pub(crate) fn capture(f: impl FnOnce()) -> Vec<Value> {
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().map(|mut v| v.extend_from_slice(b)).ok();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    let buf = Buf::default();
    let subscriber = tracing_subscriber::registry().with(JsonLayer::new(Box::new(buf.clone())));
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_has_the_contract_fields() {
        let lines = capture(|| {
            tracing::info!(client = "10.0.0.2:5000", bytes = 12u64, "flow closed");
        });
        assert_eq!(lines.len(), 1);
        let l = &lines[0];
        for key in ["timestamp", "level", "service", "message"] {
            assert!(l.get(key).is_some(), "missing {key}: {l}");
        }
        assert_eq!(l["level"], "info");
        assert_eq!(l["message"], "flow closed");
        assert_eq!(l["client"], "10.0.0.2:5000");
        assert_eq!(l["bytes"], 12);
        // Emitted from velocache::telemetry::json::tests.
        assert_eq!(l["service"], "telemetry");
        assert!(time::OffsetDateTime::parse(l["timestamp"].as_str().unwrap(), &Rfc3339).is_ok());
    }

    #[test]
    fn explicit_service_and_span_fields_are_kept() {
        let lines = capture(|| {
            let span = tracing::info_span!("request", trace_id = "abc123", service = "http");
            let _g = span.enter();
            tracing::warn!(host = "example.org", "slow origin");
        });
        let l = &lines[0];
        assert_eq!(l["service"], "http");
        assert_eq!(l["trace_id"], "abc123");
        assert_eq!(l["host"], "example.org");
        assert_eq!(l["level"], "warn");
    }

    #[test]
    fn targets_map_to_services() {
        assert_eq!(service_of_target("velocache::dns::cache"), "dns");
        assert_eq!(service_of_target("velocache"), "velocache");
        assert_eq!(service_of_target("velocache::ingress"), "datapath");
        assert_eq!(service_of_target("hyper::proto"), "hyper");
    }
}
