//! WebAssembly plugins through the gateway, installed as an operator would (`cargo xtask
//! plugins` builds them; a manifest and the component in `[plugins] dir`), with real clients:
//! `dig` against the DNS blocklist, `curl` through the header rewriter, a trapping and a looping
//! plugin contained, and a plugin reload under a download in flight.
use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use velocache_tests::{
    Daemon, Lab, addr,
    dns::{dig, unbound_zone},
    plugins::install,
    require_tools,
};

use crate::http::{Origin, curl, fetch_sha, url};

const WAIT: Duration = Duration::from_secs(15);

/// The lab daemon's configuration with DNS upstream in `origin` and plugins from `dir`.
fn config(dir: &Path, extra: &str) -> String {
    format!(
        "[dns]\nupstreams = [\"{}:53\"]\nupstream_timeout_ms = 700\n\n[plugins]\ndir = \"{}\"\n{extra}",
        addr::ORIGIN,
        dir.display()
    )
}

/// `velocache plugins ls --json`, by plugin name.
fn plugins_ls(daemon: &Daemon, lab: &Lab) -> Value {
    let out = daemon.cli(lab, &["plugins", "ls", "--json"]);
    assert!(
        out.status.success(),
        "plugins ls failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut by_name = json!({});
    for p in report["plugins"].as_array().unwrap() {
        by_name[p["name"].as_str().unwrap()] = p.clone();
    }
    by_name
}

fn ask(lab: &Lab, name: &str) -> velocache_tests::dns::DigAnswer {
    dig(&lab.client, &[&format!("@{}", addr::ORIGIN), name])
}

#[test]
fn the_dns_blocklist_answers_nxdomain_for_listed_names_and_their_subdomains() {
    require_tools(&["dig", "unbound"]);
    let lab = Lab::new();
    let zone_dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, zone_dir.path(), &[addr::ORIGIN], "");
    let plugins = tempfile::tempdir().unwrap();
    install(
        plugins.path(),
        "dns-blocklist",
        "dns-blocklist",
        "name = \"dns-blocklist\"\nhooks = [\"dns\"]\n\n[config]\nnames = [\"short.test.lab\", \"ads.lab\"]\n",
    );
    let daemon = Daemon::start(&lab, &config(plugins.path(), ""));

    let blocked = ask(&lab, "short.test.lab");
    assert_eq!(blocked.status, "NXDOMAIN", "{}", blocked.text);
    let sub = ask(&lab, "x.ads.lab");
    assert_eq!(sub.status, "NXDOMAIN", "{}", sub.text);
    let allowed = ask(&lab, "www.test.lab");
    assert_eq!(allowed.status, "NOERROR", "{}", allowed.text);
    assert_eq!(allowed.answers[0].3, "10.9.9.9");
    // Asked again: a blocked name is never cached, so the plugin answers it again.
    assert_eq!(ask(&lab, "short.test.lab").status, "NXDOMAIN");

    let line = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "query" && l["qname"] == "x.ads.lab." && l["rcode"] == "NXDOMAIN"
    });
    assert_eq!(line["rule"], "plugin:dns-blocklist", "{line}");
    let ls = plugins_ls(&daemon, &lab);
    let bl = &ls["dns-blocklist"];
    assert_eq!(bl["state"], "live", "{ls}");
    assert!(bl["calls"].as_u64().unwrap() >= 4, "{ls}");
    assert_eq!(bl["errors"], 0);
}

#[test]
fn the_header_rewriter_edits_what_the_origin_and_the_client_see() {
    require_tools(&["curl", "python3"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    origin.file("r.bin", 10_000);
    origin.route(
        "/r.bin",
        json!({"headers": {"Cache-Control": "max-age=600", "X-Origin-Secret": "s3cr3t"}}),
    );
    let plugins = tempfile::tempdir().unwrap();
    install(
        plugins.path(),
        "header-rewriter",
        "header-rewriter",
        &format!(
            "name = \"header-rewriter\"\nhooks = [\"http\"]\nhosts = [\"{}\"]\n\n[config]\n{}{}",
            addr::ORIGIN,
            "request_add = [\"X-Plugin-Added: yes\"]\nrequest_remove = [\"X-Debug-Token\"]\n",
            "response_add = [\"X-Rewritten: 1\"]\nresponse_remove = [\"X-Origin-Secret\"]\n"
        ),
    );
    let daemon = Daemon::start(&lab, &config(plugins.path(), ""));

    for round in ["miss", "hit"] {
        let head = curl(
            &lab,
            &[
                "-o",
                "/dev/null",
                "-D",
                "-",
                "-H",
                "X-Debug-Token: t",
                &url("/r.bin"),
            ],
        )
        .to_ascii_lowercase();
        assert!(head.contains("x-rewritten: 1"), "{round}: {head}");
        assert!(!head.contains("x-origin-secret"), "{round}: {head}");
    }
    let seen = origin.last("/r.bin");
    assert_eq!(seen["x-plugin-added"], "yes", "{seen}");
    assert!(seen.get("x-debug-token").is_none(), "{seen}");
    assert_eq!(origin.count("/r.bin"), 1, "the second request was a hit");
    let lines = crate::http::wait_requests(&daemon, "/r.bin", 2);
    assert_eq!(crate::http::cache_of(&lines), ["miss", "hit"]);
    let ls = plugins_ls(&daemon, &lab);
    assert_eq!(ls["header-rewriter"]["state"], "live", "{ls}");
}

#[test]
fn trapping_looping_and_broken_plugins_are_contained_and_every_request_is_still_answered() {
    require_tools(&["dig", "unbound", "curl", "python3"]);
    let lab = Lab::new();
    let zone_dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, zone_dir.path(), &[addr::ORIGIN], "");
    let origin = Origin::start(&lab);
    let want = origin.file("t.bin", 50_000);
    let plugins = tempfile::tempdir().unwrap();
    install(
        plugins.path(),
        "trap",
        "trap",
        "name = \"trap\"\nhooks = [\"dns\", \"http\"]\n",
    );
    install(
        plugins.path(),
        "spin",
        "spin",
        "name = \"spin\"\nhooks = [\"dns\", \"http\"]\n",
    );
    // And one that cannot load: the daemon starts without it.
    let broken = plugins.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("plugin.toml"),
        "name = \"broken\"\nhooks = [\"dns\"]\n",
    )
    .unwrap();
    std::fs::write(broken.join("broken.wasm"), b"\0asm not really").unwrap();
    let mut daemon = Daemon::start(&lab, &config(plugins.path(), "time_budget_ms = 5\n"));
    let refused = daemon.wait_for_log(WAIT, |l| {
        l["message"] == "plugin refused" && l["plugin"] == "broken"
    });
    assert!(
        refused["error"].as_str().unwrap().contains("broken.wasm"),
        "{refused}"
    );

    let answer = ask(&lab, "www.test.lab");
    assert_eq!(answer.status, "NOERROR", "{}", answer.text);
    assert_eq!(answer.answers[0].3, "10.9.9.9");
    assert_eq!(fetch_sha(&lab, "/t.bin"), want);

    for (name, why) in [("trap", "unreachable"), ("spin", "time budget")] {
        let line = daemon.wait_for_log(WAIT, |l| {
            l["message"] == "plugin disabled" && l["plugin"] == name
        });
        assert!(line["reason"].as_str().unwrap().contains(why), "{line}");
        assert!(line["hook"].is_string(), "{line}");
    }
    let ls = plugins_ls(&daemon, &lab);
    for (name, why) in [("trap", "unreachable"), ("spin", "time budget")] {
        assert_eq!(ls[name]["state"], "disabled", "{ls}");
        assert!(ls[name]["reason"].as_str().unwrap().contains(why), "{ls}");
        assert_eq!(ls[name]["errors"], 1, "{ls}");
    }
    // Disabled plugins are not called again; the daemon goes on.
    assert_eq!(ask(&lab, "www.test.lab").status, "NOERROR");
    assert_eq!(fetch_sha(&lab, "/t.bin"), want);
    assert!(daemon.try_wait().is_none(), "the daemon exited");
    assert_eq!(ls["broken"]["state"], "refused", "{ls}");
    let text = String::from_utf8_lossy(&daemon.cli(&lab, &["plugins", "ls"]).stdout).to_string();
    assert!(text.contains("disabled"), "{text}");
}

#[test]
fn a_plugin_reload_swaps_plugins_without_dropping_a_download_in_flight() {
    require_tools(&["curl", "python3", "sha256sum", "bash"]);
    let lab = Lab::new();
    let origin = Origin::start(&lab);
    let want = origin.file("slow.bin", 3_000_000);
    origin.route("/slow.bin", json!({"rate": 1_000_000}));
    let plugins = tempfile::tempdir().unwrap();
    install(
        plugins.path(),
        "header-rewriter",
        "header-rewriter",
        "name = \"header-rewriter\"\nhooks = [\"http\"]\n\n[config]\nresponse_add = [\"X-Generation: 1\"]\n",
    );
    let daemon = Daemon::start(&lab, &config(plugins.path(), ""));
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("slow.bin");
    let mut download = lab.client.spawn(&[
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "60",
        "-o",
        &file.display().to_string(),
        &url("/slow.bin"),
    ]);
    std::thread::sleep(Duration::from_millis(800));

    // A new version of the rewriter, a noop, and a broken plugin: the broken one is refused
    // with its error, the others load, the download goes on.
    install(
        plugins.path(),
        "header-rewriter",
        "header-rewriter",
        "name = \"header-rewriter\"\nhooks = [\"http\"]\n\n[config]\nresponse_add = [\"X-Generation: 2\"]\n",
    );
    install(
        plugins.path(),
        "noop",
        "noop",
        "name = \"noop\"\nhooks = [\"http\"]\n",
    );
    let broken = plugins.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("plugin.toml"),
        "name = \"broken\"\nhooks = [\"dns\"]\n",
    )
    .unwrap();
    std::fs::write(broken.join("broken.wasm"), b"\0asm not really").unwrap();
    let reload = daemon.cli(&lab, &["plugins", "reload"]);
    let text = String::from_utf8_lossy(&reload.stdout).to_string();
    assert_eq!(
        reload.status.code(),
        Some(1),
        "a refused plugin: exit 1\n{text}"
    );
    assert!(text.contains("refused broken"), "{text}");
    assert!(
        text.contains("header-rewriter") && text.contains("noop"),
        "{text}"
    );
    assert!(
        download.try_wait().is_none(),
        "the download ended before the reload: make it slower"
    );

    let status = download.wait_timeout(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "download failed: {}", download.stderr());
    let got = lab
        .client
        .run_ok(&["sha256sum", &file.display().to_string()]);
    assert!(got.starts_with(&want), "{got} != {want}");
    // New requests see the new version.
    origin.file("other.bin", 1000);
    let head = curl(&lab, &["-o", "/dev/null", "-D", "-", &url("/other.bin")]).to_ascii_lowercase();
    assert!(head.contains("x-generation: 2"), "{head}");
    let ls = plugins_ls(&daemon, &lab);
    assert_eq!(ls["broken"]["state"], "refused", "{ls}");
    assert_eq!(ls["noop"]["state"], "live", "{ls}");
}

/// Runs its arguments with W^X enforced on the process (`PR_SET_MDWE`: what systemd's
/// `MemoryDenyWriteExecute=yes`, set in the shipped unit, does on kernels that have it).
const WX_ENFORCED: &str = "import ctypes, os, sys\n\
if ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0:\n    sys.exit('PR_SET_MDWE failed')\n\
os.execv(sys.argv[1], sys.argv[1:])\n";

#[test]
fn where_executable_memory_is_denied_plugins_run_in_the_interpreter() {
    require_tools(&["dig", "unbound", "python3"]);
    let lab = Lab::new();
    let zone_dir = tempfile::tempdir().unwrap();
    let _zone = unbound_zone(&lab.origin, zone_dir.path(), &[addr::ORIGIN], "");
    let plugins = tempfile::tempdir().unwrap();
    install(
        plugins.path(),
        "dns-blocklist",
        "dns-blocklist",
        "name = \"dns-blocklist\"\nhooks = [\"dns\"]\n\n[config]\nnames = [\"short.test.lab\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let conf = Daemon::lab_config(dir.path(), &config(plugins.path(), ""));
    let daemon = Daemon::start_wrapped(&lab, dir, conf, &[], &["python3", "-c", WX_ENFORCED]);
    daemon.wait_for_log(WAIT, |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("plugins run in wasmtime's interpreter"))
    });
    assert_eq!(ask(&lab, "short.test.lab").status, "NXDOMAIN");
    let allowed = ask(&lab, "www.test.lab");
    assert_eq!(allowed.status, "NOERROR", "{}", allowed.text);
    assert_eq!(plugins_ls(&daemon, &lab)["dns-blocklist"]["state"], "live");
}
