//! Recording through the proxy and replaying the file, against the shared in-process origin.
use std::sync::Arc;

use super::{test_harness::*, *};
use crate::admin::{RecordAdmin, api::RecordStart};

fn start(rec: &Recorder, host: &str, cap: u64) {
    rec.start(&RecordStart {
        host: host.into(),
        for_secs: None,
        body_cap_bytes: Some(cap),
        max_entries: None,
    })
    .unwrap();
}

#[tokio::test]
async fn a_recording_keeps_the_hosts_exchanges_with_secrets_redacted_and_replay_sees_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::new(dir.path());
    let s = setup_with("", |_| {}, vec![Arc::new(rec.clone()) as Arc<dyn Phase>]).await;
    s.origin.route("/a", cacheable(blob(3000)));
    s.origin.route(
        "/text",
        Route {
            status: 200,
            headers: vec![
                ("set-cookie", "session=s3cr3t".into()),
                ("cache-control", "no-store".into()),
            ],
            body: bytes::Bytes::from_static(b"hello"),
            ..Default::default()
        },
    );
    get(s.proxy_addr, "/before").await;
    start(&rec, "Origin.Test:80", 1000);
    assert!(
        rec.start(&RecordStart {
            host: "x".into(),
            for_secs: None,
            body_cap_bytes: None,
            max_entries: None
        })
        .is_err(),
        "one recording at a time"
    );
    send(
        s.proxy_addr,
        "GET",
        "/a?q=1",
        &[("authorization", "Bearer abc"), ("x-api-key", "k1")],
    )
    .await;
    get(s.proxy_addr, "/text").await;
    // The tap's end runs when hyper is done with the body: wait for both entries.
    for _ in 0..200 {
        if rec.status().entries == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let report = rec.stop().await.unwrap();
    assert_eq!((report.state.as_str(), report.entries), ("stopped", 2));
    let file = report.file.unwrap();
    assert!(file.starts_with(&dir.path().join("records").display().to_string()));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("Bearer abc") && !text.contains("k1") && !text.contains("s3cr3t"));
    let doc: har::Har = serde_json::from_str(&text).unwrap();
    assert_eq!(doc.log.version, "1.2");
    let a = &doc.log.entries[0];
    assert_eq!(a.request.url, "http://origin.test/a?q=1");
    assert_eq!(a.request.query_string.len(), 1);
    assert_eq!(a.response.status, 200);
    assert_eq!(a.response.content.size, 3000);
    assert!(a.response.content.truncated, "cut at the 1000-byte cap");
    assert_eq!(a.response.content.encoding.as_deref(), Some("base64"));
    let b = &doc.log.entries[1];
    assert_eq!(b.response.content.text.as_deref(), Some("hello"));
    assert!(!b.response.content.truncated);

    // The origin changes one answer; the replay says which.
    s.origin.route(
        "/text",
        Route {
            status: 500,
            body: bytes::Bytes::from_static(b"broken"),
            ..Default::default()
        },
    );
    let to = format!("http://{}", s.proxy_addr);
    let r = crate::cli::replay::replay(
        std::path::Path::new(&file),
        &to,
        true,
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(r.results.len(), 2);
    assert_eq!(r.results[0].status, Some(200));
    assert!(!r.results[0].status_changed);
    assert_eq!(r.results[0].body_changed, Some(false), "{:?}", r.results[0]);
    assert_eq!(r.results[1].status, Some(500));
    assert!(r.results[1].status_changed);
    assert_eq!(r.results[1].body_changed, Some(true));
    assert_eq!(r.changed, 1);
    assert!(crate::cli::replay::render(&r).contains("200 -> 500"));
}
