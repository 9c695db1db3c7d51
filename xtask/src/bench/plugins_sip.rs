//! The SIP rows of `cargo xtask bench plugins`: what a plugin on the `sip` hook costs a call.
//!
//! sipp in `client` places back-to-back calls (INVITE with SDP, 200, ACK, BYE, 200; no media)
//! to a sipp UAS in `origin`, through the gateway, as fast as they complete (at most
//! [`CONCURRENT`] at once) for the run's length. The same load runs with no plugin, with the
//! `noop` plugin on the `sip` hook and with `sip-screener` (no prefix matches the called number,
//! so every call is screened and goes through): completed calls per second as a ratio to the run
//! without plugins in the same lab, and the plugins' own time per call of the hook (each call
//! is five messages, each shown to the plugin).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use velocache_tests::{Daemon, Lab, Ns, addr, servers};

/// Calls in flight at once.
const CONCURRENT: u32 = 50;

/// A UAC call without media: INVITE, 200, ACK, BYE, 200.
const UAC: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench uac">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

/// The UAS side: 200 at once, then ACK, BYE, 200.
const UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench uas">
  <recv request="INVITE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000

    ]]>
  </send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

/// Reads `(plugin, hook, µs per call, calls)` from the `/metrics` text (the plugins bench's).
type PerCall = fn(&str) -> Vec<(String, String, f64, u64)>;

/// One plugin set's run.
struct Run {
    /// Completed calls per second.
    calls_per_sec: f64,
    /// The plugins' own time per `sip` call, µs (their `velocache_plugin_call_seconds`).
    us_per_call: Option<f64>,
    /// The daemon's peak RSS, KiB.
    rss_kib: Option<u64>,
}

fn wait_udp(ns: &Ns, port: u16) -> Result<()> {
    for _ in 0..200 {
        if ns.run_ok(&["ss", "-uln"]).contains(&format!(":{port} ")) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on UDP {port} in {}", ns.name())
}

/// The plugin sets: none, the no-op plugin on the `sip` hook, the screener (no prefix matches
/// the called number, so every call is screened and goes through).
fn setups() -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    vec![
        ("no plugin", vec![]),
        (
            "noop",
            vec![("noop", "name = \"noop\"\nhooks = [\"sip\"]\n".to_string())],
        ),
        (
            "sip-screener",
            vec![(
                "sip-screener",
                "name = \"sip-screener\"\nhooks = [\"sip\"]\n\n[config]\nprefixes = [\"900\", \"+1900\"]\n"
                    .to_string(),
            )],
        ),
    ]
}

/// Calls for `seconds` through a daemon with `plugins` installed.
fn calls(
    lab: &Lab,
    work: &Path,
    name: &str,
    plugins: &[(&str, String)],
    seconds: u64,
    per_call: PerCall,
) -> Result<Run> {
    let dir = work.join(format!("sip-plugins-{}", name.replace(' ', "-")));
    std::fs::create_dir_all(&dir)?;
    for (plugin, manifest) in plugins {
        velocache_tests::plugins::install(&dir, plugin, plugin, manifest);
    }
    let config = format!(
        "[daemon]\nstats_interval_secs = 0\n[sip]\nmedia_fast_path = false\n[plugins]\ndir = \"{}\"\n",
        dir.display()
    );
    let daemon = Daemon::start_env(lab, &config, &[("RUST_LOG", "warn,velocache::app=info")]);
    std::fs::write(work.join("uac.xml"), UAC)?;
    std::fs::write(work.join("uas.xml"), UAS)?;
    let uas = work.join("uas.xml").display().to_string();
    let _uas = lab.origin.spawn(&[
        "sipp",
        "-sf",
        &uas,
        "-i",
        addr::ORIGIN,
        "-p",
        "5060",
        "-t",
        "u1",
        "-nostdin",
    ]);
    wait_udp(&lab.origin, 5060)?;
    let uac = work.join("uac.xml").display().to_string();
    let stat = work.join(format!("sipp-{}.csv", name.replace(' ', "-")));
    let target = format!("{}:5060", addr::ORIGIN);
    let started = Instant::now();
    // Unbounded rate, bounded concurrency, for the run's length.
    let out = lab.client.run(&[
        "sipp",
        &target,
        "-sf",
        &uac,
        "-i",
        addr::CLIENT,
        "-p",
        "5061",
        "-t",
        "u1",
        "-s",
        "4711",
        "-r",
        "100000",
        "-l",
        &CONCURRENT.to_string(),
        "-timeout",
        &format!("{seconds}s"),
        "-nostdin",
        "-trace_stat",
        "-fd",
        "1",
        "-stf",
        &stat.display().to_string(),
    ]);
    let elapsed = started.elapsed().as_secs_f64();
    let completed = successful_calls(&stat).with_context(|| {
        format!(
            "sipp wrote no statistics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if completed == 0 {
        bail!("no call completed: {}", daemon.log_text());
    }
    let metrics = String::from_utf8_lossy(&daemon.cli(lab, &["metrics"]).stdout).into_owned();
    let us_per_call = per_call(&metrics)
        .into_iter()
        .find(|(_, hook, _, _)| hook == "sip")
        .map(|(_, _, us, _)| us);
    println!("  {name}: {:.0} SIP calls/s", completed as f64 / elapsed);
    Ok(Run {
        calls_per_sec: completed as f64 / elapsed,
        us_per_call,
        rss_kib: servers::peak_rss_kib(daemon.pid()),
    })
}

/// `SuccessfulCall(C)` of the last line of sipp's statistics file.
fn successful_calls(stat: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(stat)?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines
        .next()
        .context("empty statistics")?
        .split(';')
        .collect();
    let last: Vec<&str> = lines
        .next_back()
        .context("no statistics line")?
        .split(';')
        .collect();
    let col = header
        .iter()
        .position(|h| *h == "SuccessfulCall(C)")
        .context("no SuccessfulCall(C) column")?;
    Ok(last.get(col).context("short line")?.trim().parse()?)
}

/// The SIP rows of the plugins table (path, plugins, throughput, vs no plugin, µs per call,
/// daemon peak RSS), measured in `lab`; `per_call` reads the plugins' call times from
/// `/metrics`.
pub fn rows(lab: &Lab, work: &Path, seconds: u64, per_call: PerCall) -> Result<Vec<Vec<String>>> {
    velocache_tests::require_tools(&["sipp", "ss"]);
    let mut runs = Vec::new();
    for (name, plugins) in setups() {
        runs.push((name, calls(lab, work, name, &plugins, seconds, per_call)?));
    }
    let base = runs[0].1.calls_per_sec;
    Ok(runs
        .iter()
        .map(|(name, run)| {
            vec![
                format!("SIP INVITE, call to BYE ({CONCURRENT} at once)"),
                name.to_string(),
                format!("{:.0} calls/s", run.calls_per_sec),
                if base > 0.0 {
                    format!("{:.2}", run.calls_per_sec / base)
                } else {
                    "-".into()
                },
                run.us_per_call.map_or("-".into(), |us| format!("{us:.1}")),
                run.rss_kib
                    .map_or("-".into(), |k| format!("{} MiB", k / 1024)),
            ]
        })
        .collect())
}
