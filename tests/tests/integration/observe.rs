//! TLS that no rule acts on is observed, not steered: forwarded by the kernel, its ClientHello
//! read as it passes, one `flow` line per connection; `deny` enforced by SNI in the kernel; a
//! host a rule names is steered once the gateway's DNS has answered for it; and what is steered
//! but ends spliced is relayed in the kernel.
//!
//! The origin is `https::tls_origin` (nginx with a test CA, `origin.lab` and `denied.lab` on
//! ORIGIN:443). Kernel counters come from `velocache stats --json`, as an operator reads them.
use std::time::Duration;

use serde_json::Value;
use velocache_tests::{Daemon, Lab, addr, dns::unbound_zone, require_tools};

use crate::{
    control::cli,
    https::{curl, daemon_steering, ok_body, our_ca, tls_origin},
    util::sha256,
};

const WAIT: Duration = Duration::from_secs(20);

/// The HTTPS service's kernel counters (`verdict → packets`).
fn https_kernel(lab: &Lab, daemon: &Daemon) -> Value {
    let stats = cli(lab, daemon, &["stats", "--json"]).ok();
    stats["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "https")
        .unwrap()["kernel"]
        .clone()
}

fn count(kernel: &Value, verdict: &str) -> u64 {
    kernel[verdict].as_u64().unwrap_or(0)
}

/// The observed `flow` lines, in order.
fn observed(daemon: &Daemon) -> Vec<Value> {
    daemon
        .logs()
        .into_iter()
        .filter(|l| l["message"] == "flow" && l["path"] == "observed")
        .collect()
}

#[test]
fn a_tls_connection_no_rule_names_is_observed_with_sni_alpn_and_bytes_never_steered() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_steering(&lab, &origin, "", &[]);
    // The client trusts only the origin's CA: it sees the origin's own certificate.
    let body = ok_body(&curl(
        &lab,
        &origin.pki.ca_cert(),
        "origin.lab",
        addr::ORIGIN,
        &["--http2"],
    ));
    assert_eq!(body, "hello over tls\n");
    let line = daemon.wait_for_log(WAIT, |l| l["message"] == "flow" && l["path"] == "observed");
    assert_eq!(line["service"], "https");
    assert_eq!(line["sni"], "origin.lab");
    assert_eq!(line["alpn"], "h2,http/1.1");
    assert_eq!(line["action"], "passthrough");
    assert_eq!(line["hello"], "parsed");
    assert_eq!(line["end"], "fin");
    assert_eq!(
        line["client"].as_str().unwrap().split(':').next(),
        Some(addr::CLIENT)
    );
    assert_eq!(line["orig_dst"], format!("{}:443", addr::ORIGIN));
    let (up, down) = (
        line["bytes_up"].as_u64().unwrap(),
        line["bytes_down"].as_u64().unwrap(),
    );
    assert!(up > 200, "the ClientHello and the request: {line}");
    assert!(down > 500, "the certificate chain and the body: {line}");
    assert!(line["packets_down"].as_u64().unwrap() >= 2, "{line}");
    assert!(line["duration_ms"].is_u64(), "{line}");

    let kernel = https_kernel(&lab, &daemon);
    assert!(count(&kernel, "observed_new") >= 1, "{kernel}");
    assert!(count(&kernel, "observed") >= 3, "{kernel}");
    assert_eq!(
        count(&kernel, "steered_listener"),
        0,
        "nothing steered: {kernel}"
    );
    assert_eq!(count(&kernel, "steered_established"), 0, "{kernel}");
    // The daemon handled no HTTPS connection itself.
    assert!(
        !daemon
            .logs()
            .iter()
            .any(|l| l["message"] == "flow" && l["service"] == "https" && l["path"] != "observed"),
        "{}",
        daemon.log_text()
    );
}

#[test]
fn deny_by_sni_resets_in_the_kernel_without_steering() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let (daemon, _d) = daemon_steering(
        &lab,
        &origin,
        "[[rule]]\nname = \"nope\"\nmatch_host = [\"denied.lab\", \"*.ads.lab\"]\naction = \"deny\"\n",
        &[],
    );
    let out = curl(&lab, &origin.pki.ca_cert(), "denied.lab", addr::ORIGIN, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reset"),
        "a reset, not a timeout: {err}\n{}",
        daemon.log_text()
    );
    let warn = daemon.wait_for_log(WAIT, |l| {
        l["action"] == "deny" && l["sni"] == "denied.lab" && l["rule"] == "nope"
    });
    assert_eq!(warn["path"], "kernel", "{warn}");
    let line = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow" && l["path"] == "observed" && l["sni"] == "denied.lab"
    });
    assert_eq!(line["action"], "deny", "{line}");
    assert_eq!(line["end"], "rst", "{line}");

    // A suffix rule, and a name no rule denies, from the same client.
    let out = curl(&lab, &origin.pki.ca_cert(), "x.ads.lab", addr::ORIGIN, &[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("reset"));
    let body = ok_body(&curl(
        &lab,
        &origin.pki.ca_cert(),
        "origin.lab",
        addr::ORIGIN,
        &[],
    ));
    assert_eq!(body, "hello over tls\n");

    let kernel = https_kernel(&lab, &daemon);
    assert!(count(&kernel, "denied_sni") >= 2, "{kernel}");
    assert_eq!(count(&kernel, "steered_listener"), 0, "{kernel}");
}

/// unbound in `origin` answering `origin.lab` with ORIGIN, and the client's resolver pointed at
/// it: the client's queries cross the gateway, whose DNS service answers them.
fn resolver(lab: &Lab, dir: &std::path::Path) -> velocache_tests::Background {
    let zone = unbound_zone(
        &lab.origin,
        dir,
        &[addr::ORIGIN],
        &format!("  local-data: \"origin.lab. 60 IN A {}\"\n", addr::ORIGIN),
    );
    lab.client.set_resolver(addr::ORIGIN);
    zone
}

/// `curl https://origin.lab/<path>` resolving through the client's resolver (no `--resolve`),
/// trusting `cacert`; the response head and the body's SHA-256.
fn fetch_resolved(lab: &Lab, cacert: &std::path::Path, path: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let head = ok_body(&lab.client.run(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        &cacert.display().to_string(),
        "-D",
        "-",
        "-o",
        &body.display().to_string(),
        &format!("https://origin.lab{path}"),
    ]));
    (head.to_ascii_lowercase(), sha256(&body))
}

#[test]
fn a_host_a_cache_rule_names_resolved_through_the_gateway_is_steered_and_cached() {
    require_tools(&["curl", "nginx", "openssl", "nft", "unbound"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let dns_dir = tempfile::tempdir().unwrap();
    let _dns = resolver(&lab, dns_dir.path());
    let (daemon, _d) = daemon_steering(
        &lab,
        &origin,
        "[[rule]]\nname = \"lab\"\nmatch_host = \"origin.lab\"\naction = \"cache\"\n",
        &[],
    );
    let ca = our_ca(&daemon);
    let (head, sha) = fetch_resolved(&lab, &ca, "/blob.bin");
    assert!(head.contains("x-cache-status: miss"), "{head}");
    assert_eq!(sha, origin.blob_sha);
    let (head, sha) = fetch_resolved(&lab, &ca, "/blob.bin");
    assert!(head.contains("x-cache-status: hit"), "{head}");
    assert_eq!(sha, origin.blob_sha);
    // The DNS answer went through the gateway and made the address steered.
    daemon.wait_for_log(WAIT, |l| {
        l["message"] == "query" && l["qname"] == "origin.lab."
    });
    let kernel = https_kernel(&lab, &daemon);
    assert!(count(&kernel, "steered_listener") >= 2, "{kernel}");
    assert!(observed(&daemon).is_empty(), "{}", daemon.log_text());
}

#[test]
fn a_client_resolving_by_itself_is_observed_and_logged_never_broken_and_steer_prefixes_force_it() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let rules = "[[rule]]\nname = \"lab\"\nmatch_host = \"origin.lab\"\naction = \"cache\"\n";
    let (daemon, _d) = daemon_steering(&lab, &origin, rules, &[]);
    // As with DNS-over-HTTPS: the gateway's DNS never saw the name. The client, trusting only
    // the origin's CA, gets the origin's certificate: spliced by the kernel, not decrypted.
    let body = ok_body(&curl(
        &lab,
        &origin.pki.ca_cert(),
        "origin.lab",
        addr::ORIGIN,
        &[],
    ));
    assert_eq!(body, "hello over tls\n");
    let line = daemon.wait_for_log(WAIT, |l| l["message"] == "flow" && l["path"] == "observed");
    assert_eq!(line["sni"], "origin.lab");
    assert_eq!(line["rule"], "lab");
    assert_eq!(line["action"], "passthrough");
    assert!(
        line["reason"].as_str().unwrap().contains("steer_prefixes"),
        "{line}"
    );
    drop(daemon);

    // Listing the origin's prefix steers it: decrypted and cached as the rule says.
    let (daemon, _d) = daemon_steering(&lab, &origin, rules, &[&format!("{}/32", addr::ORIGIN)]);
    let out = curl(
        &lab,
        &our_ca(&daemon),
        "origin.lab",
        addr::ORIGIN,
        &["-D", "-"],
    );
    let text = ok_body(&out).to_ascii_lowercase();
    assert!(text.contains("x-cache-status: miss"), "{text}");
}

#[test]
fn a_pinned_host_is_relayed_in_the_kernel_byte_identical_and_counted() {
    pinned_host_spliced(true, "sockmap");
}

#[test]
fn a_pinned_host_is_spliced_byte_identical_and_counted_by_default() {
    pinned_host_spliced(false, "splice");
}

/// A pinned host is steered, then spliced — joined in the kernel with `kernel_relay`, moved
/// with `splice(2)` otherwise — byte-identical, with both byte counts on its `flow` line.
fn pinned_host_spliced(kernel_relay: bool, path: &str) {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let big = crate::util::random_file(&origin.www.path().join("big.bin"), 8 << 20);
    // A rule would decrypt every `.lab` host, but `origin.lab` pins: steered, then spliced.
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}\n[tls]\nextra_roots = [\"{}\"]\nsteer_prefixes = [\"{}/32\"]\npinned_hosts = [\"origin.*\"]\nkernel_relay = {kernel_relay}\n",
        crate::https::rules(
            dir.path(),
            "[[rule]]\nname = \"lab\"\nmatch_host = \"*.lab\"\naction = \"cache\"\n"
        ),
        origin.pki.ca_cert().display(),
        addr::ORIGIN
    );
    let daemon = Daemon::start(&lab, &extra);
    let out_dir = tempfile::tempdir().unwrap();
    let body = out_dir.path().join("big");
    lab.client.run_ok(&[
        "curl",
        "-sS",
        "--max-time",
        "20",
        "--cacert",
        &origin.pki.ca_cert().display().to_string(),
        "--resolve",
        &format!("origin.lab:443:{}", addr::ORIGIN),
        "-o",
        &body.display().to_string(),
        "https://origin.lab/big.bin",
    ]);
    assert_eq!(sha256(&body), big, "byte-identical");
    let line = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "flow" && l["service"] == "https" && l["path"] == path
    });
    assert_eq!(line["pinned"], "listed", "{line}");
    assert_eq!(line["sni"], "origin.lab", "{line}");
    let down = line["bytes_down"].as_u64().unwrap();
    assert!(
        down > 8 << 20 && down < (8 << 20) + 64 * 1024,
        "the body plus TLS framing: {line}"
    );
    assert!(line["bytes_up"].as_u64().unwrap() > 200, "{line}");
    let kernel = https_kernel(&lab, &daemon);
    assert!(count(&kernel, "steered_listener") >= 1, "{kernel}");
}

#[test]
fn with_the_daemon_killed_and_its_programs_left_attached_tls_flows_untouched_even_denied_names() {
    require_tools(&["curl", "nginx", "openssl", "nft"]);
    let lab = Lab::new();
    let origin = tls_origin(&lab);
    let dir = tempfile::tempdir().unwrap();
    // Netlink (clsact) attachments outlive a SIGKILL: the programs and their maps stay, with
    // the SNI policy and observation on. What makes them fail open is their own lookups.
    let extra = format!(
        "{}\n[datapath]\nattach = \"netlink\"\n[tls]\nextra_roots = [\"{}\"]\n",
        crate::https::rules(
            dir.path(),
            "[[rule]]\nname = \"nope\"\nmatch_host = \"denied.lab\"\naction = \"deny\"\n"
        ),
        origin.pki.ca_cert().display(),
    );
    let mut daemon = Daemon::start(&lab, &extra);
    let denied = curl(&lab, &origin.pki.ca_cert(), "denied.lab", addr::ORIGIN, &[]);
    assert!(!denied.status.success(), "denied while the daemon runs");
    daemon.kill9();
    let bin = velocache_tests::velocache_bin().display().to_string();
    let shown = lab
        .gw
        .run_ok(&[&bin, "datapath", "show", "--json", addr::LAN_IF]);
    assert!(
        shown.contains("\"velocache_attached\": true"),
        "still attached: {shown}"
    );
    let body = ok_body(&curl(
        &lab,
        &origin.pki.ca_cert(),
        "denied.lab",
        addr::ORIGIN,
        &[],
    ));
    assert_eq!(body, "hello over tls\n", "no daemon, no policy: untouched");
    let body = ok_body(&curl(
        &lab,
        &origin.pki.ca_cert(),
        "origin.lab",
        addr::ORIGIN,
        &[],
    ));
    assert_eq!(body, "hello over tls\n");
}
