//! Active health checks: for every rule with `health_check = { path, interval }`, the origins
//! it names — host patterns that are literal addresses (port 80), and every origin already seen
//! whose host names match the rule — get `GET <path>` every `interval`, over plain HTTP/1.1
//! with the rule's host name in `Host` (origins on port 443 are left to passive health: a check
//! would need the TLS layer). A 2xx or 3xx answer within `[origins] health_check_timeout_ms` is
//! a success; the result enters the origin's health and breaker like a request's, and shows in
//! `velocache origins` and `velocache_origins_health_check_up`.
use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Weak},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::{CheckState, Failure, Origins, Outcome};
use crate::rules::{HealthCheck, Rules};

/// How often the loop looks for checks that are due.
const TICK: Duration = Duration::from_millis(100);

/// Run the checks the rules ask for, for as long as `origins` lives (rules reloads are seen on
/// the next tick). Does nothing outside a tokio runtime.
pub fn spawn_checks(origins: &Arc<Origins>, rules: Rules) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(origins);
    rt.spawn(run(weak, rules));
}

async fn run(origins: Weak<Origins>, rules: Rules) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(origins) = origins.upgrade() else {
            return;
        };
        let set = rules.current();
        for rule in set.rules.iter() {
            let Some(hc) = &rule.health_check else {
                continue;
            };
            for (addr, host) in targets(&origins, rule) {
                due(&origins, &rule.name, hc, addr, &host);
            }
        }
    }
}

/// The origins a rule's check covers, with the host name to ask for.
fn targets(origins: &Origins, rule: &crate::rules::Rule) -> Vec<(SocketAddr, String)> {
    let mut out: Vec<(SocketAddr, String)> = rule
        .hosts
        .iter()
        .filter_map(|h| {
            let ip: IpAddr = h.as_str().trim_matches(['[', ']']).parse().ok()?;
            Some((SocketAddr::new(ip, 80), h.as_str().to_string()))
        })
        .collect();
    let known: Vec<(SocketAddr, Vec<String>)> = origins
        .map
        .read()
        .values()
        .map(|e| (e.addr, e.state.lock().hosts.clone()))
        .collect();
    for (addr, hosts) in known {
        if addr.port() == 443 || out.iter().any(|(a, _)| *a == addr) {
            continue;
        }
        let host = hosts.iter().find(|h| {
            let name = h.rsplit_once(':').map_or(h.as_str(), |(n, _)| n);
            rule.hosts.iter().any(|p| p.matches(name) || p.matches(h))
        });
        if let Some(h) = host {
            out.push((addr, h.clone()));
        }
    }
    out
}

/// Start `addr`'s check if it is due.
fn due(origins: &Arc<Origins>, rule: &str, hc: &HealthCheck, addr: SocketAddr, host: &str) {
    let entry = origins.entry(addr);
    let now = Instant::now();
    {
        let mut st = entry.state.lock();
        let fresh = st
            .check
            .as_ref()
            .is_none_or(|c| c.rule != rule || c.path != hc.path || c.interval != hc.interval);
        if fresh {
            st.check = Some(CheckState {
                rule: rule.to_string(),
                path: hc.path.clone(),
                interval: hc.interval,
                next_due: now,
                in_flight: false,
                up: None,
                last: None,
                checks: 0,
            });
        }
        let Some(c) = st.check.as_mut() else { return };
        if c.in_flight || now < c.next_due {
            return;
        }
        c.in_flight = true;
        c.next_due = now + hc.interval;
    }
    let (origins, path, host) = (origins.clone(), hc.path.clone(), host.to_string());
    tokio::spawn(async move {
        let (outcome, what) = check_once(addr, &host, &path, origins.check_timeout).await;
        debug!(service = "origins", origin = %addr, host, path, result = %what, "health check");
        {
            let mut st = entry.state.lock();
            if let Some(c) = st.check.as_mut() {
                c.in_flight = false;
                c.up = Some(outcome == Outcome::Success);
                c.last = Some(what);
                c.checks += 1;
            }
        }
        origins.record(&entry, None, outcome, None, Instant::now());
    });
}

/// One check: its outcome and what it saw.
async fn check_once(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
) -> (Outcome, String) {
    match tokio::time::timeout(timeout, ask(addr, host, path)).await {
        Err(_) => (Outcome::Failure(Failure::Timeout), "timed out".into()),
        Ok(Err(f)) => (Outcome::Failure(f), f.describe()),
        Ok(Ok(status)) if status < 400 => (Outcome::Success, status.to_string()),
        Ok(Ok(status)) if status >= 500 => (
            Outcome::Failure(Failure::ServerError(status)),
            status.to_string(),
        ),
        // A 4xx says the origin is up but the path is wrong: a failed check, not a dead origin.
        Ok(Ok(status)) => (Outcome::Failure(Failure::Other), status.to_string()),
    }
}

async fn ask(addr: SocketAddr, host: &str, path: &str) -> Result<u16, Failure> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| io_failure(&e))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "velocache-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| Failure::Other)?;
    let resp = send.send_request(req).await.map_err(|e| {
        if e.is_incomplete_message() {
            Failure::Closed
        } else {
            std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .map_or(Failure::Other, io_failure)
        }
    })?;
    Ok(resp.status().as_u16())
}

/// The failure an I/O error means.
pub fn io_failure(e: &std::io::Error) -> Failure {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Failure::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Failure::Reset,
        K::TimedOut => Failure::Timeout,
        K::UnexpectedEof => Failure::Closed,
        _ => Failure::Other,
    }
}
