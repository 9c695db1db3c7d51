use super::*;

fn rec(host: &str) -> Record {
    Record {
        service: kind::HTTP.into(),
        host: host.into(),
        ..Record::default()
    }
}

#[test]
fn history_keeps_the_last_records_in_order() {
    let live = Live::unregistered(3);
    for h in ["a", "b", "c", "d"] {
        live.publish(rec(h));
    }
    let h = live.history(0);
    let hosts: Vec<_> = h.records.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(hosts, ["b", "c", "d"]);
    assert_eq!(
        h.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(h.published, 4);
    assert_eq!(live.history(1).records[0].host, "d");
}

#[tokio::test]
async fn a_slow_reader_loses_records_and_is_told_how_many() {
    let live = Live::unregistered(10);
    let mut sub = live.subscribe();
    // More than the channel holds, with the reader asleep: publishing never waits.
    for i in 0..(CHANNEL + 100) {
        live.publish(rec(&i.to_string()));
    }
    match sub.next().await {
        Next::Dropped(n) => assert_eq!(n, 100),
        _ => panic!("expected a drop notice first"),
    }
    match sub.next().await {
        Next::Record(r) => assert_eq!(r.host, "100"),
        _ => panic!("expected the oldest record still held"),
    }
    assert_eq!(live.history(0).dropped, 100);
    assert_eq!(sub.dropped(), 100);
}

#[test]
fn dns_hits_are_summed_until_flushed() {
    let live = Live::unregistered(10);
    let c: IpAddr = "10.0.0.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    for _ in 0..5 {
        live.dns_hit(c, "a.lab.", "A", "hit", "NOERROR", 20);
    }
    live.dns_hit(c, "b.lab.", "AAAA", "hit", "NOERROR", 40);
    assert!(live.history(0).records.is_empty());
    live.flush_hits();
    let h = live.history(0);
    assert_eq!(h.records.len(), 2);
    let a = h.records.iter().find(|r| r.host == "a.lab.");
    assert_eq!(a.map(|r| (r.count, r.duration_us)), Some((5, 20)));
    live.flush_hits();
    assert_eq!(live.history(0).records.len(), 2);
}

#[test]
fn exchanges_are_found_by_trace_id_while_kept() {
    let live = Live::unregistered(10);
    for i in 0..(EXCHANGES + 1) {
        live.store_exchange(Exchange {
            id: format!("t{i}"),
            ..Exchange::default()
        });
    }
    assert!(live.exchange("t0").is_none());
    assert_eq!(live.exchange("t5").map(|e| e.id.clone()), Some("t5".into()));
}
