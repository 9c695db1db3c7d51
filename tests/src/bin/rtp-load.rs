//! `rtp-load`: RTP load for the lab benchmarks, run inside a lab namespace with `ip netns exec`.
//!
//! - `uas BIND MEDIA`: a minimal SIP UAS on `BIND` answering every INVITE with SDP for
//!   `MEDIA`, and BYE with 200 (until killed).
//! - `recv BIND SECONDS`: receive RTP on `BIND` for at most `SECONDS` (stops 2 s after the last
//!   packet); prints JSON: packets, per-stream loss, one-way latency percentiles.
//! - `send SRC_IP BASE_PORT STREAMS SECONDS TARGET`: `STREAMS` streams of 20 ms packets
//!   (stream `i` from `SRC_IP:BASE_PORT+2i`) for `SECONDS`; prints JSON. `TARGET` is
//!   `sip:HOST:PORT` (set each stream up as a SIP call through whatever is on the path, send to
//!   the answered media address, hang up after), `dst:HOST:PORT` (one address for all), or
//!   `file:PATH` (one address per line, per stream).
//! - `rtpengine NG STREAMS CALLER_IP BASE_PORT CALLEE OUT`: create `STREAMS` calls in rtpengine
//!   over its ng protocol (offer from `CALLER_IP:BASE_PORT+2i`, answer from `CALLEE`) and
//!   write, per stream, the address the caller must send to into `OUT`.
//!
//! Everything is bounded: durations come from the arguments, SIP waits time out.
#![expect(
    clippy::disallowed_methods,
    reason = "a synchronous lab tool: blocking sleeps are what it needs"
)]
#![expect(clippy::print_stderr, reason = "a command-line tool reports on stderr")]

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use velocache_tests::rtpload::{
    bencode, bencode_get, header, now_ns, parse_rtp, percentile, request, response, rtp_packet,
    sdp, sdp_media, status, tag,
};

type Res<T> = Result<T, String>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("uas") if args.len() == 3 => uas(&args[1], &args[2]),
        Some("recv") if args.len() == 3 => recv(&args[1], &args[2]),
        Some("send") if args.len() == 6 => send(&args[1..]),
        Some("rtpengine") if args.len() == 7 => rtpengine(&args[1..]),
        _ => Err("usage: see the module documentation of tests/src/bin/rtp-load.rs".into()),
    };
    if let Err(e) = result {
        eprintln!("rtp-load: {e}");
        std::process::exit(1);
    }
}

fn addr(s: &str) -> Res<SocketAddr> {
    s.parse().map_err(|e| format!("`{s}`: {e}"))
}

fn num<T: std::str::FromStr>(s: &str) -> Res<T> {
    s.parse().map_err(|_| format!("`{s}` is not a number"))
}

fn uas(bind: &str, media: &str) -> Res<()> {
    let media = addr(media)?;
    let sock = UdpSocket::bind(addr(bind)?).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let reply = if msg.starts_with("INVITE ") {
            response(&msg, 200, "OK", "uas", Some(&sdp(media)))
        } else if msg.starts_with("BYE ") {
            response(&msg, 200, "OK", "uas", None)
        } else {
            continue;
        };
        let _ = sock.send_to(reply.as_bytes(), from);
    }
}

fn recv(bind: &str, seconds: &str) -> Res<()> {
    let seconds: u64 = num(seconds)?;
    let sock = UdpSocket::bind(addr(bind)?).map_err(|e| e.to_string())?;
    // A deep buffer, so that what is measured is the path's loss, not the receiver's.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(16 << 20))
        .map_err(|e| format!("SO_RCVBUFFORCE: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut buf = vec![0u8; 2048];
    let mut latencies: Vec<u32> = Vec::new();
    let mut streams: HashMap<u32, (u16, u16, u64)> = HashMap::new();
    let mut last = None::<Instant>;
    let mut first = None::<Instant>;
    while Instant::now() < deadline {
        if last.is_some_and(|l| l.elapsed() > Duration::from_secs(2)) {
            break;
        }
        let Ok(n) = sock.recv(&mut buf) else { continue };
        let now = now_ns();
        let Some((ssrc, seq, sent)) = parse_rtp(&buf[..n]) else {
            continue;
        };
        let t = Instant::now();
        first.get_or_insert(t);
        last = Some(t);
        latencies.push((now.saturating_sub(sent) / 1_000).min(u64::from(u32::MAX)) as u32);
        let s = streams.entry(ssrc).or_insert((seq, seq, 0));
        s.1 = if seq.wrapping_sub(s.1) < 0x8000 {
            seq
        } else {
            s.1
        };
        s.2 += 1;
    }
    let expected: u64 = streams
        .values()
        .map(|(lo, hi, _)| u64::from(hi.wrapping_sub(*lo)) + 1)
        .sum();
    let received = latencies.len() as u64;
    let active = match (first, last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    latencies.sort_unstable();
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().map(|l| f64::from(*l)).sum::<f64>() / latencies.len() as f64
    };
    println!(
        "{}",
        serde_json::json!({
            "received": received,
            "expected": expected,
            "streams": streams.len(),
            "active_secs": active,
            "latency_us_p50": percentile(&latencies, 50.0),
            "latency_us_p99": percentile(&latencies, 99.0),
            "latency_us_mean": mean,
        })
    );
    Ok(())
}

/// Exchange `msg` on `sock` until a final response for `call_id` arrives (retransmitting
/// every 500 ms, at most 4 s).
fn transact(sock: &UdpSocket, to: SocketAddr, msg: &str, call_id: &str) -> Res<String> {
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_535];
    for _ in 0..8 {
        sock.send_to(msg.as_bytes(), to)
            .map_err(|e| e.to_string())?;
        let end = Instant::now() + Duration::from_millis(500);
        while Instant::now() < end {
            let Ok(n) = sock.recv(&mut buf) else { break };
            let r = String::from_utf8_lossy(&buf[..n]).into_owned();
            if header(&r, "Call-ID") == Some(call_id) && status(&r).is_some_and(|c| c >= 200) {
                return Ok(r);
            }
        }
    }
    Err(format!("no final response for {call_id}"))
}

struct Calls {
    sock: UdpSocket,
    server: SocketAddr,
    local: SocketAddr,
    /// (call-id, to-tag) of answered calls.
    up: Vec<(String, String)>,
}

impl Calls {
    fn setup(
        src_ip: &str,
        server: SocketAddr,
        media: &[SocketAddr],
    ) -> Res<(Calls, Vec<SocketAddr>)> {
        let local = addr(&format!("{src_ip}:5062"))?;
        let sock = UdpSocket::bind(local).map_err(|e| e.to_string())?;
        let mut calls = Calls {
            sock,
            server,
            local,
            up: Vec::new(),
        };
        let mut dsts = Vec::new();
        let run = std::process::id();
        for (i, m) in media.iter().enumerate() {
            let id = format!("bench-{run}-{i}");
            let inv = request("INVITE", &id, 1, local, server, None, Some(&sdp(*m)));
            let r = transact(&calls.sock, server, &inv, &id)?;
            if status(&r) != Some(200) {
                return Err(format!("call {i} answered {r}"));
            }
            let to_tag = header(&r, "To").and_then(tag).unwrap_or("").to_string();
            let dst = sdp_media(&r).ok_or_else(|| format!("no SDP in the answer of call {i}"))?;
            let ack = request("ACK", &id, 1, local, server, Some(&to_tag), None);
            calls
                .sock
                .send_to(ack.as_bytes(), server)
                .map_err(|e| e.to_string())?;
            calls.up.push((id, to_tag));
            dsts.push(dst);
        }
        Ok((calls, dsts))
    }

    fn hang_up(&self) {
        for (id, to_tag) in &self.up {
            let bye = request("BYE", id, 2, self.local, self.server, Some(to_tag), None);
            let _ = transact(&self.sock, self.server, &bye, id);
        }
    }
}

fn send(a: &[String]) -> Res<()> {
    let (src_ip, base, streams, seconds, target) = (
        a[0].as_str(),
        num::<u16>(&a[1])?,
        num::<usize>(&a[2])?,
        num::<u64>(&a[3])?,
        a[4].as_str(),
    );
    let media: Vec<SocketAddr> = (0..streams)
        .map(|i| addr(&format!("{src_ip}:{}", base as usize + 2 * i)))
        .collect::<Res<_>>()?;
    let socks: Vec<UdpSocket> = media
        .iter()
        .map(|m| UdpSocket::bind(m).map_err(|e| format!("bind {m}: {e}")))
        .collect::<Res<_>>()?;
    let setup_started = Instant::now();
    let (calls, dsts) = if let Some(server) = target.strip_prefix("sip:") {
        let (c, d) = Calls::setup(src_ip, addr(server)?, &media)?;
        (Some(c), d)
    } else if let Some(d) = target.strip_prefix("dst:") {
        (None, vec![addr(d)?; streams])
    } else if let Some(f) = target.strip_prefix("file:") {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?;
        let d: Vec<SocketAddr> = text.lines().map(addr).collect::<Res<_>>()?;
        if d.len() != streams {
            return Err(format!(
                "{f} has {} addresses for {streams} streams",
                d.len()
            ));
        }
        (None, d)
    } else {
        return Err(format!("bad target `{target}`"));
    };
    let setup_ms = setup_started.elapsed().as_millis() as u64;
    // Tell whoever measures that setup is over and the load begins.
    println!("{}", serde_json::json!({ "phase": "sending" }));
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    // 20 ms rounds of 1 ms ticks; stream i sends on tick i % 20, so load is spread evenly.
    let start = Instant::now();
    let mut sent = 0u64;
    let mut errors = 0u64;
    let rounds = seconds * 50;
    for round in 0..rounds {
        for tick in 0..20u64 {
            let at = start + Duration::from_micros(round * 20_000 + tick * 1_000);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            for i in (tick as usize..streams).step_by(20) {
                let p = rtp_packet(i as u32, round as u16, (round * 160) as u32, 160, now_ns());
                match socks[i].send_to(&p, dsts[i]) {
                    Ok(_) => sent += 1,
                    Err(_) => errors += 1,
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(c) = &calls {
        c.hang_up();
    }
    println!(
        "{}",
        serde_json::json!({
            "sent": sent,
            "errors": errors,
            "streams": streams,
            "secs": elapsed,
            "setup_ms": setup_ms,
            "calls": calls.map_or(0, |c| c.up.len()),
        })
    );
    Ok(())
}

fn rtpengine(a: &[String]) -> Res<()> {
    let (ng, streams, caller_ip, base, callee, out) = (
        addr(&a[0])?,
        num::<usize>(&a[1])?,
        a[2].as_str(),
        num::<u16>(&a[3])?,
        addr(&a[4])?,
        a[5].as_str(),
    );
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_535];
    let mut ng_call = |cookie: &str, pairs: &[(&str, &str)]| -> Res<String> {
        let mut msg = format!("{cookie} ").into_bytes();
        msg.extend_from_slice(&bencode(pairs));
        sock.send_to(&msg, ng).map_err(|e| e.to_string())?;
        let n = sock.recv(&mut buf).map_err(|e| format!("rtpengine: {e}"))?;
        let reply = &buf[..n];
        if bencode_get(reply, "result").as_deref() != Some("ok") {
            return Err(format!("rtpengine: {}", String::from_utf8_lossy(reply)));
        }
        bencode_get(reply, "sdp").ok_or_else(|| "rtpengine reply without SDP".to_string())
    };
    let mut lines = Vec::new();
    for i in 0..streams {
        let id = format!("bench-{i}");
        let caller: SocketAddr = addr(&format!("{caller_ip}:{}", base as usize + 2 * i))?;
        // The offer (caller's SDP) comes back as what the callee is to send to, the answer
        // (callee's SDP) as what the caller is to send to.
        ng_call(
            &format!("o{i}"),
            &[
                ("command", "offer"),
                ("call-id", &id),
                ("from-tag", "caller"),
                ("sdp", &sdp(caller)),
            ],
        )?;
        let answer = ng_call(
            &format!("a{i}"),
            &[
                ("command", "answer"),
                ("call-id", &id),
                ("from-tag", "caller"),
                ("to-tag", "callee"),
                ("sdp", &sdp(callee)),
            ],
        )?;
        let dst = sdp_media(&answer).ok_or_else(|| format!("no media in {answer}"))?;
        lines.push(dst.to_string());
    }
    std::fs::write(out, lines.join("\n") + "\n").map_err(|e| format!("{out}: {e}"))
}
