//! Running `wrk` in a namespace and reading its report.
use anyhow::{Context as _, Result, bail};
use velocache_tests::Ns;

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct WrkResult {
    /// Requests per second.
    pub requests_per_sec: f64,
    /// Response bytes per second, in MB/s (10^6).
    pub mb_per_sec: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Non-2xx/3xx responses plus socket errors.
    pub errors: u64,
}

/// Run wrk with `connections` connections for `seconds` against `url`, from `ns`.
pub fn run(
    ns: &Ns,
    url: &str,
    connections: u32,
    seconds: u64,
    extra: &[&str],
) -> Result<WrkResult> {
    let conns = connections.to_string();
    let dur = format!("{seconds}s");
    let mut args = vec!["wrk", "-t2", "-c", &conns, "-d", &dur, "--latency"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = ns.run(&args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("cannot read wrk's report:\n{text}"))
}

/// Parse wrk's report.
pub fn parse(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.requests_per_sec = v.trim().parse().ok()?;
        } else if let Some(v) = l.strip_prefix("Transfer/sec:") {
            r.mb_per_sec = bytes(v.trim())? / 1e6;
        } else if let Some(v) = l.strip_prefix("99%") {
            r.p99_ms = millis(v.trim())?;
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().ok()?;
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            r.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (r.requests_per_sec > 0.0).then_some(r)
}

fn split_unit(v: &str) -> Option<(f64, &str)> {
    let idx = v.find(|c: char| c.is_ascii_alphabetic())?;
    Some((v[..idx].trim().parse().ok()?, &v[idx..]))
}

fn bytes(v: &str) -> Option<f64> {
    let (n, unit) = split_unit(v)?;
    let mult = match unit {
        "B" => 1.0,
        "KB" => 1024.0,
        "MB" => 1024.0 * 1024.0,
        "GB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(n * mult)
}

fn millis(v: &str) -> Option<f64> {
    let (n, unit) = split_unit(v)?;
    let mult = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_wrk_report() {
        let text = "Running 10s test @ http://10.77.2.2/1k.bin\n  2 threads and 32 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   420.00us  100.00us   5.00ms   90.00%\n  Latency Distribution\n     50%  400.00us\n     75%  450.00us\n     90%  500.00us\n     99%    1.20ms\n  700000 requests in 10.00s, 800.00MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:  70000.50\nTransfer/sec:     80.00MB\n";
        let r = parse(text).unwrap();
        assert!((r.requests_per_sec - 70000.5).abs() < 1e-6);
        assert!((r.p99_ms - 1.2).abs() < 1e-9);
        assert!((r.mb_per_sec - 80.0 * 1024.0 * 1024.0 / 1e6).abs() < 1e-6);
        assert_eq!(r.errors, 3);
    }
}
