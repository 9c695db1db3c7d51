//! Observed flows, put together from their kernel events and counters, and their `flow` line.
//!
//! Hello events fill a small table (server name, ALPN, how the hello read, the rule that names
//! the host); an end event, or the sweep finding a flow idle or ended without its event (a full
//! ring buffer), writes the flow's line from its kernel entry — the freshest counters — and
//! deletes the entry. The line has the fields of a spliced connection's (`service`, `client`,
//! `orig_dst`, `transport`, `sni`, `alpn`, `action`, `rule`, `bytes_up`/`bytes_down`,
//! `duration_ms`) plus `path: "observed"` (forwarded by the kernel, never steered), the packet
//! counts, `hello` and `end`.
//!
//! The kernel decides `deny` for exact names and `*.suffix` patterns itself; for a glob it
//! cannot follow it lets the flow through (`SNI_PUNT`) and this table evaluates the real rules:
//! a deny then marks the flow's entry denied, and the kernel resets its next client packet.
use std::collections::{HashMap, HashSet};

use aya::maps::{HashMap as BpfHashMap, MapData};
use tracing::{info, warn};
use velocache_common::tls::{
    DIR_FIN, DIR_RST, END_FIN, END_REUSED, END_RST, HELLO_MALFORMED, HELLO_NOT_TLS, HELLO_PARSED,
    HELLO_PENDING, HELLO_SPLIT, HELLO_SPLIT_PARTIAL, HELLO_UNSUPPORTED, MAX_OBSERVED_FLOWS,
    ObservedFlow, SNI_DENY, SNI_PUNT, TlsFlowKey, UP_DENIED,
};

use super::{
    Steering,
    events::{Event, Hello, endpoints},
    monotonic_ns,
};
use crate::rules::{Rules, TlsDecision};

/// What the events of one flow said.
#[derive(Debug, Clone, Default)]
struct Seen {
    started_ns: u64,
    sni: Option<String>,
    alpn: Vec<String>,
    hello: u32,
    /// The rule naming the host, and whether it would have decrypted the flow had it been
    /// steered (its address was not learned from the gateway's DNS: DoH, a hosts file, …).
    rule: Option<String>,
    wanted_interception: bool,
    denied: bool,
}

/// Why a flow's line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// FIN both ways.
    Fin,
    /// A reset either way.
    Rst,
    /// The client reused the tuple for a new connection.
    Reused,
    /// No packet for the idle timeout.
    Idle,
    /// The daemon is stopping.
    Shutdown,
}

impl End {
    fn name(self) -> &'static str {
        match self {
            End::Fin => "fin",
            End::Rst => "rst",
            End::Reused => "reused",
            End::Idle => "idle",
            End::Shutdown => "shutdown",
        }
    }

    fn from_status(status: u32) -> End {
        match status {
            END_FIN => End::Fin,
            END_RST => End::Rst,
            END_REUSED => End::Reused,
            _ => End::Rst,
        }
    }
}

fn hello_name(status: u32) -> &'static str {
    match status {
        HELLO_PARSED => "parsed",
        HELLO_SPLIT => "split",
        // Still pending at the end: the rest never came in order.
        HELLO_PENDING | HELLO_SPLIT_PARTIAL => "split_partial",
        HELLO_NOT_TLS => "not_tls",
        HELLO_MALFORMED => "malformed",
        HELLO_UNSUPPORTED => "unsupported",
        _ => "none",
    }
}

/// The observed flows the daemon knows of.
pub struct Flows {
    kernel: BpfHashMap<MapData, TlsFlowKey, ObservedFlow>,
    seen: HashMap<TlsFlowKey, Seen>,
    /// Flows reported in the last seconds (start time, when reported), against duplicates.
    finished: HashMap<TlsFlowKey, (u64, u64)>,
    rules: Rules,
    /// Whether a host would have been steered (a rule acts on it, pinning considered).
    steering: Steering,
    /// The dashboard's live feed.
    live: Option<crate::live::Live>,
}

impl Flows {
    /// Flows over the kernel's `TLS_FLOWS`, with the live rules and the steering table.
    pub fn new(
        kernel: BpfHashMap<MapData, TlsFlowKey, ObservedFlow>,
        rules: Rules,
        steering: Steering,
    ) -> Self {
        Flows {
            kernel,
            seen: HashMap::new(),
            finished: HashMap::new(),
            rules,
            steering,
            live: None,
        }
    }

    /// Publish every flow's end into the dashboard's live feed.
    pub fn set_live(&mut self, live: Option<crate::live::Live>) {
        self.live = live;
    }

    /// Take one decoded event.
    pub fn on_event(&mut self, event: Event) {
        match event {
            Event::Hello(h) => self.on_hello(h),
            Event::End { key, flow, status } => {
                self.finish(&key, Some(flow), End::from_status(status))
            }
        }
    }

    fn on_hello(&mut self, h: Hello) {
        let seen = self.seen.entry(h.key).or_default();
        if seen.started_ns != h.flow.started_ns {
            *seen = Seen {
                started_ns: h.flow.started_ns,
                ..Seen::default()
            };
        }
        seen.hello = h.status;
        if !h.alpn.is_empty() {
            seen.alpn = h.alpn;
        }
        let Some(sni) = h.sni else {
            return;
        };
        let (client, orig_dst) = endpoints(&h.key);
        let rules = self.rules.current();
        let decision = rules.tls_decision(&sni);
        let (rule, deny) = match decision {
            TlsDecision::Passthrough(r) => (r.map(|r| r.name.clone()), false),
            TlsDecision::Deny(r) => (Some(r.name.clone()), true),
            TlsDecision::Intercept { rule, .. } => (Some(rule.name.clone()), false),
        };
        // A pinned host a rule names only through a glob would have been spliced anyway.
        seen.wanted_interception = !deny && self.steering.steers(&sni);
        seen.rule = rule.clone();
        seen.sni = Some(sni.clone());
        let rule = rule.unwrap_or_default();
        if h.policy_action == SNI_DENY {
            seen.denied = true;
            warn!(service = "https", %client, sni = %sni, %orig_dst, rule = %rule,
                action = "deny", path = "kernel", "TLS connection denied by rule");
            if !deny {
                warn!(service = "https", %client, sni = %sni,
                    "the kernel's SNI policy denied a host the rules in force let through \
                     (rules changed since it was written?)");
            }
        } else if deny {
            // A glob the kernel could not follow (SNI_PUNT), or rules newer than its policy:
            // deny from here — the kernel resets the flow's next client packet.
            seen.denied = true;
            let marked = match self.kernel.get(&h.key, 0) {
                Ok(mut e) if e.started_ns == h.flow.started_ns => {
                    e.up_flags |= UP_DENIED;
                    self.kernel.insert(h.key, e, 0).is_ok()
                }
                _ => false,
            };
            warn!(service = "https", %client, sni = %sni, %orig_dst, rule = %rule,
                action = "deny", path = if h.policy_action == SNI_PUNT { "punted" } else { "late" },
                reset = marked, "TLS connection denied by rule");
        }
    }

    /// Write the flow's line and forget it. `event`: the entry as an end event carried it.
    pub fn finish(&mut self, key: &TlsFlowKey, event: Option<ObservedFlow>, end: End) {
        let current = self.kernel.get(key, 0).ok();
        let flow = match (current, event) {
            // The kernel's entry is this flow, with the freshest counters.
            (Some(c), Some(e)) if c.started_ns == e.started_ns => {
                let _ = self.kernel.remove(key);
                c
            }
            // A new connection took the tuple since: the event is the old one's last word.
            (Some(_), Some(e)) => e,
            (None, Some(e)) => e,
            (Some(c), None) => {
                let _ = self.kernel.remove(key);
                c
            }
            (None, None) => return,
        };
        // Both directions may send an end event (FINs crossing on two CPUs): one line only.
        if self
            .finished
            .get(key)
            .is_some_and(|f| f.0 == flow.started_ns)
        {
            return;
        }
        self.finished
            .insert(*key, (flow.started_ns, monotonic_ns()));
        let seen = match self.seen.remove(key) {
            Some(s) if s.started_ns == flow.started_ns => s,
            Some(s) => {
                // The table holds a newer flow on this tuple: keep it.
                self.seen.insert(*key, s);
                Seen::default()
            }
            None => Seen::default(),
        };
        log_flow(key, &flow, &seen, end);
        if let Some(live) = &self.live {
            publish(live, key, &flow, &seen, end);
        }
    }

    /// Report flows that ended without their event reaching us, and flows idle for
    /// `idle_ns`; forget table entries whose kernel entry is gone (evicted).
    pub fn sweep(&mut self, idle_ns: u64) {
        let now = monotonic_ns();
        let keys = self.kernel_keys();
        for key in &keys {
            let Ok(f) = self.kernel.get(key, 0) else {
                continue;
            };
            let quiet = now.saturating_sub(f.last_ns);
            let both = f.up_flags | f.down_flags;
            if both & DIR_RST != 0 && quiet > 2_000_000_000 {
                self.finish(key, None, End::Rst);
            } else if f.up_flags & f.down_flags & DIR_FIN != 0 && quiet > 2_000_000_000 {
                self.finish(key, None, End::Fin);
            } else if quiet > idle_ns {
                self.finish(key, None, End::Idle);
            }
        }
        self.seen
            .retain(|k, s| keys.contains(k) || now.saturating_sub(s.started_ns) < idle_ns);
        self.finished
            .retain(|_, f| now.saturating_sub(f.1) < 10_000_000_000);
    }

    /// Report every flow still in the kernel map (the daemon is stopping).
    pub fn report_all(&mut self) {
        for key in self.kernel_keys() {
            self.finish(&key, None, End::Shutdown);
        }
    }

    /// The keys in the kernel map. Walking a hash map the kernel changes meanwhile restarts
    /// from its first key whenever the current one disappears, so the walk is bounded.
    fn kernel_keys(&self) -> HashSet<TlsFlowKey> {
        self.kernel
            .keys()
            .filter_map(Result::ok)
            .take(2 * MAX_OBSERVED_FLOWS as usize)
            .collect()
    }
}

/// One observed flow into the live feed (the kernel forwarded it; the daemon only watched).
fn publish(live: &crate::live::Live, key: &TlsFlowKey, f: &ObservedFlow, seen: &Seen, end: End) {
    let (client, orig_dst) = endpoints(key);
    let action = if seen.denied || f.up_flags & UP_DENIED != 0 {
        "deny"
    } else {
        "observed"
    };
    live.publish(crate::live::Record {
        service: crate::live::kind::TLS.into(),
        client: client.to_string(),
        host: seen.sni.clone().unwrap_or_default(),
        what: seen.alpn.join(","),
        status: action.into(),
        bytes: f.bytes_down,
        duration_us: f.last_ns.saturating_sub(f.started_ns) / 1000,
        rule: seen.rule.clone().unwrap_or_default(),
        direction: "kernel".into(),
        detail: vec![
            ("orig_dst".into(), orig_dst.to_string()),
            ("end".into(), end.name().into()),
            ("bytes_up".into(), f.bytes_up.to_string()),
            ("bytes_down".into(), f.bytes_down.to_string()),
        ],
        ..crate::live::Record::default()
    });
}

fn log_flow(key: &TlsFlowKey, f: &ObservedFlow, seen: &Seen, end: End) {
    let (client, orig_dst) = endpoints(key);
    let duration_ms = f.last_ns.saturating_sub(f.started_ns) / 1_000_000;
    let action = if seen.denied || f.up_flags & UP_DENIED != 0 {
        "deny"
    } else {
        "passthrough"
    };
    let sni = seen.sni.as_deref().unwrap_or("");
    let alpn = seen.alpn.join(",");
    let rule = seen.rule.as_deref().unwrap_or("");
    let hello = hello_name(seen.hello);
    if seen.wanted_interception && action == "passthrough" {
        info!(service = "https", %client, %orig_dst, transport = "tcp", sni, alpn = %alpn,
            action, rule, path = "observed", hello, end = end.name(),
            bytes_up = f.bytes_up, bytes_down = f.bytes_down,
            packets_up = f.packets_up, packets_down = f.packets_down, duration_ms,
            reason = "a rule names this host, but its address was not learned from the \
                      gateway's DNS (DoH, a hosts file?): not steered; [tls] steer_prefixes \
                      forces steering",
            "flow");
    } else {
        info!(service = "https", %client, %orig_dst, transport = "tcp", sni, alpn = %alpn,
            action, rule, path = "observed", hello, end = end.name(),
            bytes_up = f.bytes_up, bytes_down = f.bytes_down,
            packets_up = f.packets_up, packets_down = f.packets_down, duration_ms,
            "flow");
    }
}
