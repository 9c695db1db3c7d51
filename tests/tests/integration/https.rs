//! HTTPS: SNI splice by default, interception where a rule asks, pinning, refusals.
//!
//! These tests reach their origins with `curl --resolve`, so the gateway's DNS never sees the
//! names: [`daemon_with`] steers the origin's whole network (`[tls] steer_prefixes`), and every
//! connection reaches the TLS service as an operator who lists the prefix would have it. What
//! happens to connections that are *not* steered is `observe.rs`'s subject.
use std::time::Duration;

use velocache_tests::{Daemon, Lab, addr, require_tools, servers};

use crate::util::{http_server, random_file, sha256};

const WAIT: Duration = Duration::from_secs(20);

/// A TLS origin for `origin.lab` (certificate from a test CA) on ORIGIN:443, and a second one
/// with a self-signed certificate nobody trusts (`bad.lab`) on ORIGIN2:443.
pub(crate) struct TlsOrigin {
    pub(crate) pki: servers::TestPki,
    pub(crate) www: tempfile::TempDir,
    /// SHA-256 of `blob.bin` (256 KiB of random bytes next to `hello.txt`).
    pub(crate) blob_sha: String,
    _work: tempfile::TempDir,
    servers: Vec<velocache_tests::Background>,
}

pub(crate) fn tls_origin(lab: &Lab) -> TlsOrigin {
    let work = tempfile::tempdir().unwrap();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("hello.txt"), "hello over tls\n").unwrap();
    let blob_sha = random_file(&www.path().join("blob.bin"), 256 * 1024);
    // Last modified two days ago: fresh for a while by the heuristic (10 % of its age).
    std::fs::File::options()
        .write(true)
        .open(www.path().join("blob.bin"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 86400))
        .unwrap();
    let pki = servers::TestPki::new(work.path(), "lab test CA");
    let (cert, key) = pki.server("origin", &["origin.lab", "denied.lab", addr::ORIGIN]);
    let rogue = servers::TestPki::new(&work.path().join("rogue").tap_mkdir(), "rogue CA");
    let (bad_cert, bad_key) = rogue.server("bad", &["bad.lab"]);
    // Two nginx instances: origin.lab on ORIGIN, bad.lab on ORIGIN2 (bound per address).
    let good = servers::nginx_tls(&lab.origin, www.path(), 443, &cert, &key, work.path());
    let bad_work = work.path().join("bad").tap_mkdir();
    let bad = servers::nginx_tls(
        &lab.origin,
        www.path(),
        8443,
        &bad_cert,
        &bad_key,
        &bad_work,
    );
    // Route ORIGIN2:443 to the rogue server's port inside the origin namespace.
    lab.origin.run_ok(&["nft", "add", "table", "ip", "t"]);
    lab.origin.run_ok(&[
        "nft",
        "add chain ip t pre { type nat hook prerouting priority -100; }",
    ]);
    lab.origin.run_ok(&[
        "nft",
        "add",
        "rule",
        "ip",
        "t",
        "pre",
        "ip",
        "daddr",
        addr::ORIGIN2,
        "tcp",
        "dport",
        "443",
        "redirect",
        "to",
        ":8443",
    ]);
    TlsOrigin {
        pki,
        www,
        blob_sha,
        _work: work,
        servers: vec![good, bad],
    }
}

trait TapMkdir {
    fn tap_mkdir(self) -> std::path::PathBuf;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> std::path::PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

/// `curl` from the client trusting `cacert`, resolving `host` to `ip`.
pub(crate) fn curl(
    lab: &Lab,
    cacert: &std::path::Path,
    host: &str,
    ip: &str,
    extra: &[&str],
) -> std::process::Output {
    let resolve = format!("{host}:443:{ip}");
    let url = format!("https://{host}/hello.txt");
    let cacert = cacert.display().to_string();
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        &cacert,
        "--resolve",
        &resolve,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    lab.client.run(&args)
}

pub(crate) fn ok_body(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "curl failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn rules(lab_dir: &std::path::Path, text: &str) -> String {
    let path = lab_dir.join("rules.toml");
    std::fs::write(&path, text).unwrap();
    format!("[rules]\nfile = \"{}\"\n", path.display())
}

/// A daemon with `rules_text`, trusting the origin's CA, steering every TLS connection to the
/// origin's network.
pub(crate) fn daemon_with(
    lab: &Lab,
    origin: &TlsOrigin,
    rules_text: &str,
) -> (Daemon, tempfile::TempDir) {
    daemon_steering(lab, origin, rules_text, &["10.77.2.0/24", "fd77:2::/64"])
}

/// A daemon with `rules_text`, trusting the origin's CA, steering `prefixes`.
pub(crate) fn daemon_steering(
    lab: &Lab,
    origin: &TlsOrigin,
    rules_text: &str,
    prefixes: &[&str],
) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}\n[tls]\nextra_roots = [\"{}\"]\nsteer_prefixes = {:?}\n",
        rules(dir.path(), rules_text),
        origin.pki.ca_cert().display(),
        prefixes
    );
    (Daemon::start(lab, &extra), dir)
}

pub(crate) fn our_ca(daemon: &Daemon) -> std::path::PathBuf {
    daemon.dir().join("state/ca/ca.crt")
}

#[test]
fn without_a_rule_tls_is_spliced_and_the_sni_logged() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(&lab, &origin, "");
    // The client trusts only the origin's CA: it must see the origin's own certificate.
    let body = ok_body(&curl(
        &lab,
        &origin.pki.ca_cert(),
        "origin.lab",
        addr::ORIGIN,
        &["--http2"],
    ));
    assert_eq!(body, "hello over tls\n");
    let line = daemon.wait_for_log(WAIT, |l| l["message"] == "flow" && l["service"] == "https");
    assert_eq!(line["sni"], "origin.lab");
    assert_eq!(line["action"], "passthrough");
    assert_eq!(line["orig_dst"], format!("{}:443", addr::ORIGIN));
    assert!(line["bytes_down"].as_u64().unwrap() > 500, "{line}");
    assert!(line["alpn"].as_str().unwrap().contains("h2"), "{line}");
}

#[test]
fn an_intercept_rule_decrypts_with_our_ca_over_http2_and_http1() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "[[rule]]\nname = \"lab\"\nmatch_host = \"origin.lab\"\naction = \"intercept_no_cache\"\n",
    );
    let ca = our_ca(&daemon);
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    for (flag, proto) in [("--http2", "h2"), ("--http1.1", "http/1.1")] {
        let out = curl(
            &lab,
            &ca,
            "origin.lab",
            addr::ORIGIN,
            &[flag, "-w", "%{http_version}"],
        );
        let body = ok_body(&out);
        assert!(body.starts_with("hello over tls\n"), "{body}");
        daemon.wait_for_log(WAIT, |l| {
            l["message"] == "flow" && l["action"] == "intercept" && l["protocol"] == proto
        });
    }
    // The certificate the client saw was ours, for the SNI.
    let out = lab.client.run(&[
        "sh", "-c",
        &format!("echo | openssl s_client -connect {}:443 -servername origin.lab 2>/dev/null | openssl x509 -noout -issuer", addr::ORIGIN),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("VeloCache local CA"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_client_that_rejects_our_certificate_is_spliced_from_then_on() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "[[rule]]\nname = \"lab\"\nmatch_host = \"origin.lab\"\naction = \"intercept_no_cache\"\n",
    );
    // This client trusts only the origin's CA, as a pinning app would.
    let first = curl(&lab, &origin.pki.ca_cert(), "origin.lab", addr::ORIGIN, &[]);
    assert!(!first.status.success(), "our certificate must be rejected");
    daemon.wait_for_log(WAIT, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("client rejected our certificate"))
    });
    let body = ok_body(&curl(
        &lab,
        &origin.pki.ca_cert(),
        "origin.lab",
        addr::ORIGIN,
        &[],
    ));
    assert_eq!(body, "hello over tls\n");
    daemon.wait_for_log(WAIT, |l| l["message"] == "flow" && l["pinned"] == "learned");
}

#[test]
fn an_origin_with_a_bad_certificate_fails_the_client_with_the_reason() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "[[rule]]\nname = \"bad\"\nmatch_host = \"bad.lab\"\naction = \"intercept_no_cache\"\n",
    );
    let out = curl(
        &lab,
        &our_ca(&daemon),
        "bad.lab",
        addr::ORIGIN2,
        &["--http1.1", "-i"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 502"), "{text}");
    assert!(text.contains("failed verification"), "{text}");
    daemon.wait_for_log(WAIT, |l| {
        l["level"] == "warn"
            && l["sni"] == "bad.lab"
            && l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("verification"))
    });
    // A client offering only HTTP/2 gets a TLS alert instead.
    let out = lab.client.run(&[
        "sh",
        "-c",
        &format!(
            "echo | openssl s_client -connect {}:443 -servername bad.lab -alpn h2 2>&1",
            addr::ORIGIN2
        ),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("alert") && text.contains("no peer certificate"),
        "{text}"
    );
}

#[test]
fn deny_rules_reset_and_garbage_is_spliced_without_harm() {
    require_tools(&["curl", "nginx", "openssl", "nft", "python3"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "[[rule]]\nname = \"nope\"\nmatch_host = \"denied.lab\"\naction = \"deny\"\n",
    );
    let out = curl(&lab, &origin.pki.ca_cert(), "denied.lab", addr::ORIGIN, &[]);
    assert!(!out.status.success());
    daemon.wait_for_log(WAIT, |l| {
        l["action"] == "deny" && l["sni"] == "denied.lab" && l["rule"] == "nope"
    });

    // Not TLS at all: spliced untouched (nginx answers it with a 400), the daemon carries on.
    let script = format!(
        "import socket\ns=socket.create_connection(('{}',443),timeout=5)\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\nprint(s.recv(100))",
        addr::ORIGIN
    );
    let out = lab.client.run_ok(&["python3", "-c", &script]);
    assert!(out.contains("400"), "{out}");
    daemon.wait_for_log(WAIT, |l| l["message"] == "flow" && l["tls"] == "unparsed");
    let body = ok_body(&curl(
        &lab,
        &origin.pki.ca_cert(),
        "origin.lab",
        addr::ORIGIN,
        &[],
    ));
    assert_eq!(body, "hello over tls\n");
}

/// `curl` a URL of `origin.lab` from the client (resolved to ORIGIN, trusting `cacert`):
/// the response head, and the SHA-256 of the body.
fn fetch(lab: &Lab, cacert: &std::path::Path, url: &str, extra: &[&str]) -> (String, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let body = out_dir.path().join("body");
    let cacert = cacert.display().to_string();
    let body_arg = body.display().to_string();
    let r443 = format!("origin.lab:443:{}", addr::ORIGIN);
    let r80 = format!("origin.lab:80:{}", addr::ORIGIN);
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        &cacert,
        "--resolve",
        &r443,
        "--resolve",
        &r80,
        "-D",
        "-",
        "-o",
        &body_arg,
    ];
    args.extend_from_slice(extra);
    args.push(url);
    let head = ok_body(&lab.client.run(&args)).to_ascii_lowercase();
    (head, sha256(&body))
}

/// The access-log lines of `path`, in order.
fn requests(daemon: &Daemon, path: &str) -> Vec<serde_json::Value> {
    daemon
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "request" && l["path"] == path)
        .collect()
}

#[test]
fn a_cache_rule_misses_then_hits_over_http2_http1_and_plain_http_even_with_the_origin_gone() {
    require_tools(&["curl", "nginx", "openssl", "nft", "python3"]);
    let lab = Lab::new();
    let mut origin = tls_origin(&lab);
    let plain = http_server(&lab.origin, origin.www.path(), 80);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "[[rule]]\nname = \"lab\"\nmatch_host = \"origin.lab\"\naction = \"cache\"\n",
    );
    let ca = our_ca(&daemon);
    let https = "https://origin.lab/blob.bin";

    let (head, sha) = fetch(&lab, &ca, https, &["--http2"]);
    assert!(head.starts_with("http/2 200"), "{head}");
    assert!(head.contains("x-cache-status: miss"), "{head}");
    assert_eq!(sha, origin.blob_sha);
    let (head, sha) = fetch(&lab, &ca, https, &["--http2"]);
    assert!(head.contains("x-cache-status: hit"), "{head}");
    assert_eq!(sha, origin.blob_sha);
    let (head, sha) = fetch(&lab, &ca, https, &["--http1.1"]);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("x-cache-status: hit"), "{head}");
    assert_eq!(sha, origin.blob_sha);
    // The same object over plain HTTP is the same cache entry.
    let (head, sha) = fetch(&lab, &ca, "http://origin.lab/blob.bin", &[]);
    assert!(head.contains("x-cache-status: hit"), "{head}");
    assert_eq!(sha, origin.blob_sha);

    daemon.wait_for_log(WAIT, |_| requests(&daemon, "/blob.bin").len() >= 4);
    let lines = requests(&daemon, "/blob.bin");
    let seen: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["service"].as_str().unwrap(), l["cache"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("https", "miss"),
            ("https", "hit"),
            ("https", "hit"),
            ("http", "hit")
        ]
    );
    assert_eq!(lines[0]["sni"], "origin.lab");
    assert_eq!(lines[0]["rule"], "lab");

    // With both origins gone, a hit still needs nothing from them.
    origin.servers.clear();
    drop(plain);
    let (head, sha) = fetch(&lab, &ca, https, &["--http2"]);
    assert!(head.contains("x-cache-status: hit"), "{head}");
    assert_eq!(sha, origin.blob_sha);
}

#[test]
fn a_cache_host_whose_origin_fails_verification_gets_a_502_with_the_reason_over_http2() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "[[rule]]\nname = \"bad\"\nmatch_host = \"bad.lab\"\naction = \"cache\"\n",
    );
    let out = curl(
        &lab,
        &our_ca(&daemon),
        "bad.lab",
        addr::ORIGIN2,
        &["--http2", "-i"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/2 502"), "{text}");
    assert!(text.contains("failed verification"), "{text}");
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "request failed"
            && l["sni"] == "bad.lab"
            && l["error"]
                .as_str()
                .is_some_and(|e| e.contains("verification"))
    });
}

#[test]
fn the_ca_page_hands_out_our_certificate_and_one_download_is_enough_to_trust_us() {
    require_tools(&["curl", "nginx", "openssl", "nft", "dig"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "[[rule]]\nname = \"lab\"\nmatch_host = \"origin.lab\"\naction = \"cache\"\n",
    );
    // The gateway's DNS answers the page's name, whatever resolver the client asks...
    let answer = velocache_tests::dns::dig(
        &lab.client,
        &[&format!("@{}", addr::ORIGIN), "velocache.ca"],
    );
    assert_eq!(answer.status, "NOERROR", "{}", answer.text);
    assert_eq!(answer.answers[0].3, "198.18.0.80", "{}", answer.text);
    // ...and the proxy answers the page by name at that address (any routed address would do;
    // the lab's gateway has no default route, so give it the one a real gateway has).
    lab.gw
        .run_ok(&["ip", "route", "add", "198.18.0.0/15", "via", addr::ORIGIN]);
    let resolve = format!("velocache.ca:80:{}", answer.answers[0].3);
    let page = ok_body(&lab.client.run(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "http://velocache.ca/",
    ]));
    assert!(page.contains("update-ca-certificates"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("velocache-ca.pem");
    let pem_arg = pem.display().to_string();
    lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "-o",
        &pem_arg,
        "http://velocache.ca/velocache-ca.pem",
    ]);
    assert_eq!(
        std::fs::read_to_string(&pem).unwrap(),
        std::fs::read_to_string(our_ca(&daemon)).unwrap()
    );
    let (head, sha) = fetch(&lab, &pem, "https://origin.lab/blob.bin", &[]);
    assert!(head.contains("200"), "{head}");
    assert_eq!(sha, origin.blob_sha);
}

#[test]
fn http2_clients_are_served_from_an_origin_that_speaks_only_http1() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    // A third origin, `h1.lab` on ORIGIN2_6:443, without HTTP/2 (no `http2` on its listener).
    let work = tempfile::tempdir().unwrap();
    let (cert, key) = origin.pki.server("h1", &["h1.lab"]);
    let server = format!(
        "  server {{\n    listen 9443 ssl;\n    listen [::]:9443 ssl;\n    ssl_certificate {};\n    ssl_certificate_key {};\n    root {};\n  }}\n",
        cert.display(),
        key.display(),
        origin.www.path().display()
    );
    let _h1 = servers::run_nginx(&lab.origin, work.path(), "h1", &server, 9443);
    lab.origin.run_ok(&["nft", "add", "table", "ip6", "t6"]);
    lab.origin.run_ok(&[
        "nft",
        "add chain ip6 t6 pre { type nat hook prerouting priority -100; }",
    ]);
    lab.origin.run_ok(&[
        "nft",
        "add",
        "rule",
        "ip6",
        "t6",
        "pre",
        "ip6",
        "daddr",
        addr::ORIGIN2_6,
        "tcp",
        "dport",
        "443",
        "redirect",
        "to",
        ":9443",
    ]);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "[[rule]]\nname = \"h1\"\nmatch_host = \"h1.lab\"\naction = \"cache\"\n",
    );
    let ca = our_ca(&daemon).display().to_string();
    let resolve = format!("h1.lab:443:[{}]", addr::ORIGIN2_6);
    for expected in ["miss", "hit"] {
        let head = ok_body(&lab.client.run(&[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--http2",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-D",
            "-",
            "-o",
            "/dev/null",
            "https://h1.lab/blob.bin",
        ]))
        .to_ascii_lowercase();
        assert!(head.starts_with("http/2 200"), "{head}");
        assert!(
            head.contains(&format!("x-cache-status: {expected}")),
            "{head}"
        );
    }
}

#[test]
fn https_urls_are_warmed_over_verified_tls_and_the_first_client_gets_a_hit() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    // The gateway resolves the warm-up's names like a client would: its own /etc/hosts here.
    lab.gw
        .set_hosts(&[("origin.lab", addr::ORIGIN), ("bad.lab", addr::ORIGIN2)]);
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_with(
        &lab,
        &origin,
        "warmup_urls = [\"https://origin.lab/blob.bin\"]\n\n\
         [[rule]]\nname = \"lab\"\nmatch_host = \"*.lab\"\naction = \"cache\"\n",
    );
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "cache warm-up finished" && l["ok"] == 1
    });
    let warmed = requests(&daemon, "/blob.bin");
    assert_eq!(warmed.len(), 1, "{warmed:?}");
    assert_eq!(warmed[0]["service"], "https", "{warmed:?}");
    assert_eq!(
        warmed[0]["cache"], "miss",
        "fetched from the origin: {warmed:?}"
    );
    assert_eq!(warmed[0]["status"], 200);

    let (head, sha) = fetch(
        &lab,
        &our_ca(&daemon),
        "https://origin.lab/blob.bin",
        &["--http2"],
    );
    assert!(head.contains("x-cache-status: hit"), "{head}");
    assert_eq!(sha, origin.blob_sha);

    // An origin whose certificate fails verification is not warmed, and the reason is given.
    let out = crate::control::cli(
        &lab,
        &daemon,
        &["cache", "warm", "https://bad.lab/hello.txt", "--json"],
    );
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let failed = out.json();
    let r = &failed["results"][0];
    assert_eq!(r["ok"], false, "{failed}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .starts_with("the gateway answered 502")
            && r["error"].as_str().unwrap().contains("verification"),
        "{failed}"
    );
}
