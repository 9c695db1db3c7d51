//! Request smuggling through the gateway: crafted requests from `client` (raw bytes, no
//! well-behaved client would send them) toward real origins in `origin` — a strict origin that
//! records every request it reads on each connection and anything it cannot read as one
//! (`tests/scripts/wire_origin.py`, answering early or after the body), and nginx. The proxy
//! must keep the origin and itself in agreement on where each request ends, never store an
//! answer under another request's key, and blame a malformed body on the client.
use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use velocache_tests::{
    Background, Daemon, Lab, addr, require_tools,
    servers::{run_nginx, wait_tcp},
};

fn script(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
        .display()
        .to_string()
}

/// Send `bytes` (Python escapes) to the origin's port 80 from `client`; what came back.
fn raw(lab: &Lab, bytes: &str) -> String {
    lab.client
        .run_ok(&["python3", &script("raw_http.py"), addr::ORIGIN, "80", bytes])
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\\r\\nHost: origin.test\\r\\nConnection: close\\r\\n\\r\\n")
}

struct WireOrigin {
    log: PathBuf,
    _dir: tempfile::TempDir,
    _server: Background,
}

impl WireOrigin {
    fn start(lab: &Lab, mode: &str) -> WireOrigin {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("seen.jsonl");
        std::fs::write(&log, "").unwrap();
        let server = lab.origin.spawn(&[
            "python3",
            &script("wire_origin.py"),
            "80",
            mode,
            &log.display().to_string(),
        ]);
        wait_tcp(&lab.origin, "127.0.0.1", 80);
        WireOrigin {
            log,
            _dir: dir,
            _server: server,
        }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn targets(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|l| l["target"].as_str().map(str::to_string))
            .collect()
    }

    fn desyncs(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l.get("desync").is_some())
            .collect()
    }
}

#[test]
fn smuggling_shapes_never_desync_a_strict_origin() {
    require_tools(&["python3"]);
    for mode in ["early", "after"] {
        let lab = Lab::new();
        let origin = WireOrigin::start(&lab, mode);
        let daemon = Daemon::start(&lab, "");
        // GET and HEAD carrying a body that is itself a request for /evil.
        for method in ["GET", "HEAD"] {
            let out = raw(
                &lab,
                &format!(
                    "{method} /victim HTTP/1.1\\r\\nHost: origin.test\\r\\nContent-Length: 30\\r\\nConnection: close\\r\\n\\r\\nGET /evil HTTP/1.1\\r\\nX: y\\r\\n\\r\\n\\r\\n"
                ),
            );
            assert!(out.starts_with("HTTP/1.1 200"), "{mode} {method}: {out}");
            let next = raw(&lab, &get("/next"));
            assert!(next.contains("this is /next"), "{mode} {method}: {next}");
        }
        // Nothing was stored under /victim from those: a plain GET misses, then hits.
        let miss = raw(&lab, &get("/victim"));
        assert!(miss.contains("x-cache-status: miss"), "{mode}: {miss}");
        std::thread::sleep(Duration::from_millis(300));
        let hit = raw(&lab, &get("/victim"));
        assert!(hit.contains("x-cache-status: hit"), "{mode}: {hit}");
        assert!(hit.contains("this is /victim"), "{mode}: {hit}");

        // CL.TE and TE.CL: one framing wins, and the origin gets framing of the proxy's own.
        let clte = raw(
            &lab,
            "POST /clte HTTP/1.1\\r\\nHost: origin.test\\r\\nContent-Length: 6\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\nGET /smuggled HTTP/1.1\\r\\nHost: origin.test\\r\\n\\r\\n",
        );
        assert!(clte.contains("this is /clte"), "{mode}: {clte}");
        let tecl = raw(
            &lab,
            "POST /tecl HTTP/1.1\\r\\nHost: origin.test\\r\\nContent-Length: 3\\r\\nTransfer-Encoding: chunked\\r\\nConnection: close\\r\\n\\r\\n8\\r\\nSMUGGLED\\r\\n0\\r\\n\\r\\n",
        );
        assert!(tecl.contains("this is /tecl"), "{mode}: {tecl}");
        // Refused before the origin: conflicting lengths, obs-fold, two Hosts, no Host.
        for (what, req) in [
            (
                "two lengths",
                "POST /dup HTTP/1.1\\r\\nHost: origin.test\\r\\nContent-Length: 3\\r\\nContent-Length: 5\\r\\n\\r\\nabcde",
            ),
            (
                "obs-fold",
                "GET /fold HTTP/1.1\\r\\nHost: origin.test\\r\\nX-A: 1\\r\\n  folded\\r\\n\\r\\n",
            ),
            (
                "two Hosts",
                "GET /twohosts HTTP/1.1\\r\\nHost: origin.test\\r\\nHost: other.test\\r\\n\\r\\n",
            ),
            ("no Host", "GET /nohost HTTP/1.1\\r\\n\\r\\n"),
        ] {
            let out = raw(&lab, req);
            assert!(out.starts_with("HTTP/1.1 400"), "{mode} {what}: {out}");
        }
        // Absolute form: the request line's host is what the origin is told and the key.
        let abs = raw(
            &lab,
            "GET http://origin.test/abs HTTP/1.1\\r\\nHost: attacker.test\\r\\nConnection: close\\r\\n\\r\\n",
        );
        assert!(abs.contains("this is /abs"), "{mode}: {abs}");
        // A malformed chunked body is the client's fault, never a 502 blaming the origin.
        let bad = raw(
            &lab,
            "POST /badchunk HTTP/1.1\\r\\nHost: origin.test\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\nzz\\r\\nhello\\r\\n0\\r\\n\\r\\n",
        );
        assert!(!bad.contains(" 502 "), "{mode}: {bad}");
        if mode == "after" {
            assert!(bad.starts_with("HTTP/1.1 400"), "{mode}: {bad}");
        }
        // Chunk sizes that overflow or are negative: the client's fault too.
        for (what, size) in [("overflow", "ffffffffffffffffffff"), ("negative", "-5")] {
            let out = raw(
                &lab,
                &format!(
                    "POST /chunk-{what} HTTP/1.1\\r\\nHost: origin.test\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n{size}\\r\\nhello\\r\\n0\\r\\n\\r\\n"
                ),
            );
            assert!(!out.contains(" 502 "), "{mode} chunk {what}: {out}");
            if mode == "after" {
                assert!(
                    out.starts_with("HTTP/1.1 400"),
                    "{mode} chunk {what}: {out}"
                );
            }
        }
        // Bare LF line ends: read as line ends (RFC 9112 §2.2 lets a server), and what reaches
        // the origin is the proxy's own CRLF serialisation.
        let lf = raw(
            &lab,
            "GET /barelf HTTP/1.1\\nHost: origin.test\\nConnection: close\\n\\n",
        );
        assert!(
            lf.contains("this is /barelf") || lf.starts_with("HTTP/1.1 400"),
            "{mode}: {lf}"
        );
        // The same Content-Length twice: one length, agreed on, or refused.
        let same = raw(
            &lab,
            "POST /samelen HTTP/1.1\\r\\nHost: origin.test\\r\\nContent-Length: 5\\r\\nContent-Length: 5\\r\\nConnection: close\\r\\n\\r\\nabcde",
        );
        assert!(
            same.contains("this is /samelen") || same.starts_with("HTTP/1.1 400"),
            "{mode}: {same}"
        );
        // CONNECT: a tunnel of its own to the original destination, echoed by the origin.
        let tunnel = raw(
            &lab,
            "CONNECT upstream.test:443 HTTP/1.1\\r\\nHost: upstream.test:443\\r\\n\\r\\nping through the tunnel",
        );
        assert!(tunnel.starts_with("HTTP/1.1 200"), "{mode}: {tunnel}");
        assert!(
            tunnel.ends_with("ping through the tunnel"),
            "{mode}: {tunnel}"
        );
        let after = raw(&lab, &get("/after"));
        assert!(after.contains("this is /after"), "{mode}: {after}");

        let targets = origin.targets();
        for never in [
            "/evil",
            "/smuggled",
            "/dup",
            "/fold",
            "/twohosts",
            "/nohost",
        ] {
            assert!(
                !targets.iter().any(|t| t == never),
                "{mode}: {never} reached the origin: {targets:?}"
            );
        }
        let desyncs: Vec<Value> = origin
            .desyncs()
            .into_iter()
            // The half-sent bodies of the bad chunk sizes, aborted by the proxy, are the only
            // ones allowed.
            .filter(|d| {
                !["/badchunk", "/chunk-overflow", "/chunk-negative"]
                    .contains(&d["target"].as_str().unwrap_or(""))
            })
            .collect();
        assert!(desyncs.is_empty(), "{mode}: {desyncs:?}");
        let lines = origin.lines();
        let victim: Vec<u64> = lines
            .iter()
            .filter(|l| l["target"] == "/victim")
            .map(|l| l["body"].as_u64().unwrap())
            .collect();
        assert_eq!(
            victim,
            vec![30, 30, 0],
            "{mode}: GET/HEAD went with their bodies"
        );
        let abs = lines.iter().find(|l| l["target"] == "/abs").unwrap();
        assert_eq!(abs["host"], "origin.test", "{mode}");
        if let Some(same) = lines.iter().find(|l| l["target"] == "/samelen") {
            assert_eq!(same["body"], 5, "{mode}");
        }
        let tecl = lines.iter().find(|l| l["target"] == "/tecl").unwrap();
        assert_eq!(tecl["body"], 8, "{mode}");
        // The daemon logged the client's faults as the client's.
        let logs = daemon.logs();
        assert!(
            logs.iter().any(|l| l["message"] == "request failed"
                && l["side"] == "Downstream"
                && l["error"].as_str().is_some_and(|e| e.contains("Host"))),
            "{mode}: no downstream error logged"
        );
    }
}

#[test]
fn a_get_with_a_body_does_not_swallow_the_next_request_at_nginx() {
    require_tools(&["python3", "nginx"]);
    let lab = Lab::new();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.txt"), "file a\n").unwrap();
    std::fs::write(root.join("b.txt"), "file b\n").unwrap();
    let access = work.path().join("access.log");
    let server = format!(
        "  server {{\n    listen 80;\n    root {};\n    access_log {} ;\n    add_header Cache-Control max-age=600;\n  }}\n",
        root.display(),
        access.display()
    );
    let _nginx = run_nginx(&lab.origin, work.path(), "smuggle", &server, 80);
    let _daemon = Daemon::start(&lab, "");
    for _ in 0..3 {
        let a = raw(
            &lab,
            "GET /a.txt HTTP/1.1\\r\\nHost: origin.test\\r\\nContent-Length: 30\\r\\nConnection: close\\r\\n\\r\\nGET /b.txt HTTP/1.1\\r\\nX: y\\r\\n\\r\\n\\r\\n",
        );
        assert!(
            a.starts_with("HTTP/1.1 200") && a.ends_with("file a\n"),
            "{a}"
        );
        let b = raw(&lab, &get("/b.txt"));
        assert!(
            b.starts_with("HTTP/1.1 200") && b.ends_with("file b\n"),
            "{b}"
        );
    }
    let log = std::fs::read_to_string(&access).unwrap();
    assert!(
        !log.contains("\" 400 "),
        "nginx saw a broken request:\n{log}"
    );
}
