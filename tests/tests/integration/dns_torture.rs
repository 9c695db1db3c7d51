//! DNS torture through the gateway: a scripted upstream in `origin` that answers badly on
//! purpose (`tests/scripts/bad_dns.py`: compression loops, truncated, empty, oversized, wrong
//! ID, wrong question, noise) and malformed queries sent raw from `client`
//! (`tests/scripts/raw_dns.py`). Every client gets a clear answer — the real one, SERVFAIL, a
//! truncated reply it retries over TCP, FORMERR — or, for what is not a query at all, nothing;
//! a wrong answer is never passed on; every query is logged; the daemon lives, and the next
//! query is answered.
use std::{path::Path, time::Duration};

use velocache_tests::{Daemon, Lab, addr, dns::dig, require_tools, servers::wait_tcp};

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn a_badly_answering_upstream_and_malformed_queries_get_clear_answers_and_later_queries_work() {
    require_tools(&["dig", "python3"]);
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen.txt");
    std::fs::write(&seen, "").unwrap();
    let _upstream = lab.origin.spawn(&[
        "python3",
        &script("bad_dns.py"),
        addr::ORIGIN,
        &seen.display().to_string(),
    ]);
    wait_tcp(&lab.origin, addr::ORIGIN, 53);
    let mut daemon = Daemon::start(
        &lab,
        &format!(
            "[dns]\nupstreams = [\"{}:53\"]\nupstream_timeout_ms = 700\n",
            addr::ORIGIN
        ),
    );
    let at = format!("@{}", addr::ORIGIN);
    let ok = dig(&lab.client, &[&at, "ok.test.lab", "+time=5", "+tries=1"]);
    assert_eq!(ok.status, "NOERROR", "{}", ok.text);

    for kind in [
        "loop", "qloop", "trunc", "short", "empty", "big", "wrongid", "wrongq", "garbage", "tc",
    ] {
        let name = format!("{kind}.test.lab");
        // Without EDNS: the client takes 512 bytes over UDP, so `big` must come back truncated
        // (dig then asks again over TCP).
        let a = dig(&lab.client, &[&at, &name, "+time=5", "+tries=1", "+noedns"]);
        assert!(
            a.status == "SERVFAIL" || a.status == "NOERROR",
            "{kind}: no clear answer:\n{}\n{}",
            a.text,
            daemon.log_text()
        );
        for rr in &a.answers {
            assert!(
                rr.3.starts_with("10.9."),
                "{kind}: an answer the upstream did not give for this name: {rr:?}"
            );
        }
        if matches!(kind, "big" | "tc") {
            assert_eq!(a.status, "NOERROR", "{kind}: {}", a.text);
        }
        if matches!(kind, "wrongid" | "wrongq" | "loop" | "garbage" | "empty") {
            assert_eq!(a.status, "SERVFAIL", "{kind}: {}", a.text);
        }
        let qname = format!("{name}.");
        daemon.wait_for_log(Duration::from_secs(10), |l| {
            l["message"] == "query" && l["qname"] == qname.as_str()
        });
        assert!(daemon.try_wait().is_none(), "{kind}: the daemon died");
    }

    // Malformed queries straight from the client.
    let out = lab
        .client
        .run_ok(&["python3", &script("raw_dns.py"), addr::ORIGIN]);
    let results: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(results.len(), 11, "{out}");
    for (case, result) in &results {
        match *case {
            "short" | "empty" | "a-response" => assert_eq!(*result, "none", "{case}: {out}"),
            "ok" => assert!(result.starts_with("rcode=0 "), "{case}: {out}"),
            // Unreadable questions: FORMERR, never silence (the client would retry).
            "pointer-loop" | "pointer-forward" | "long-name" | "label-past-end" | "no-question"
            | "two-questions" => {
                assert!(result.starts_with("rcode=1 "), "{case}: {out}")
            }
            // A readable question with bytes after it: answered or refused, clearly.
            _ => assert!(result.starts_with("rcode="), "{case}: {out}"),
        }
    }
    daemon.wait_for_log(Duration::from_secs(10), |l| {
        l["message"] == "malformed query"
    });
    daemon.wait_for_log(Duration::from_secs(10), |l| {
        l["message"] == "message dropped: too short or a response"
    });

    let after = dig(&lab.client, &[&at, "ok.test.lab", "+time=5", "+tries=1"]);
    assert_eq!(after.status, "NOERROR", "{}", after.text);
    assert!(daemon.try_wait().is_none(), "the daemon died");
}
