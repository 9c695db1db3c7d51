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

#[test]
fn a_reader_gets_the_newest_records_and_counts_the_ones_it_passed_over() {
    let live = Live::unregistered(100);
    live.publish(rec("before"));
    let mut reader = live.reader();
    assert_eq!(live.history(0).subscribers, 1);
    assert!(reader.next_batch(10).is_empty(), "only what comes after it");
    for i in 0..25 {
        live.publish(rec(&i.to_string()));
    }
    let batch: Vec<_> = reader
        .next_batch(10)
        .iter()
        .map(|r| r.host.clone())
        .collect();
    assert_eq!(batch.first().map(String::as_str), Some("15"));
    assert_eq!(batch.last().map(String::as_str), Some("24"));
    assert_eq!(reader.dropped(), 15);
    live.publish(rec("next"));
    let batch = reader.next_batch(10);
    assert_eq!(batch.len(), 1);
    assert_eq!(reader.dropped(), 15);
    assert_eq!(live.history(0).dropped, 15);
    drop(reader);
    assert_eq!(live.history(0).subscribers, 0);
}

#[test]
fn a_reader_left_behind_the_history_counts_what_fell_out() {
    let live = Live::unregistered(5);
    let mut reader = live.reader();
    for i in 0..20 {
        live.publish(rec(&i.to_string()));
    }
    let batch = reader.next_batch(100);
    assert_eq!(batch.len(), 5, "the history holds five");
    assert_eq!(reader.dropped(), 15);
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
