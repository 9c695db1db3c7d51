use std::{net::SocketAddr, time::Duration};

use super::*;
use crate::sip::message::parse;

const CLIENT: &str = "10.77.1.2:5061";
const FAR: &str = "10.77.2.2:5060";

fn msg(start: &str, cseq: &str, extra: &str) -> SipMessage {
    let text = format!(
        "{start}\r\nCall-ID: call-1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@y>\r\nCSeq: {cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    parse(text.as_bytes()).unwrap()
}

fn key1() -> CallKey {
    CallKey::new(
        "call-1",
        CLIENT.parse().unwrap(),
        FAR.parse().unwrap(),
        "udp",
    )
}

struct Driver {
    table: CallTable,
    t0: Instant,
}

impl Driver {
    fn new() -> Self {
        Driver {
            table: CallTable::new(10),
            t0: Instant::now(),
        }
    }
    fn feed(&mut self, m: SipMessage, from: Side, ms: u64) -> Change {
        self.table.on_message(
            &m,
            None,
            from,
            CLIENT.parse().unwrap(),
            FAR.parse().unwrap(),
            "udp",
            self.t0 + Duration::from_millis(ms),
        )
    }
}

#[test]
fn a_completed_call_records_pdd_setup_and_who_hung_up() {
    let mut d = Driver::new();
    assert!(
        d.feed(
            msg("INVITE sip:b@y SIP/2.0", "1 INVITE", ""),
            Side::Client,
            0
        )
        .new_call
    );
    d.feed(msg("SIP/2.0 100 Trying", "1 INVITE", ""), Side::Far, 5);
    d.feed(msg("SIP/2.0 180 Ringing", "1 INVITE", ""), Side::Far, 40);
    d.feed(msg("SIP/2.0 180 Ringing", "1 INVITE", ""), Side::Far, 60);
    let c = d.feed(msg("SIP/2.0 200 OK", "1 INVITE", ""), Side::Far, 900);
    assert!(c.media, "answer installs media");
    d.feed(msg("ACK sip:b@y SIP/2.0", "1 ACK", ""), Side::Client, 905);
    let call = d.table.get(&key1()).unwrap();
    assert_eq!(call.state, CallState::Confirmed);
    assert_eq!(
        call.early_at.unwrap() - call.invited_at,
        Duration::from_millis(40)
    );
    assert_eq!(
        call.answered_at.unwrap() - call.invited_at,
        Duration::from_millis(900)
    );
    let c = d.feed(msg("BYE sip:a@x SIP/2.0", "2 BYE", ""), Side::Far, 5000);
    assert_eq!(c.ended, Some(Outcome::Completed));
    let call = d.table.take(&key1()).unwrap();
    assert_eq!(call.ended_by.as_deref(), Some("BYE from far"));
    assert_eq!(call.final_status, Some((200, "OK".into())));
}

#[test]
fn a_busy_callee_fails_the_call_with_code_and_reason() {
    let mut d = Driver::new();
    d.feed(
        msg("INVITE sip:b@y SIP/2.0", "1 INVITE", ""),
        Side::Client,
        0,
    );
    let c = d.feed(msg("SIP/2.0 486 Busy Here", "1 INVITE", ""), Side::Far, 30);
    assert_eq!(c.ended, Some(Outcome::Failed));
    assert_eq!(
        d.table.get(&key1()).unwrap().final_status,
        Some((486, "Busy Here".into()))
    );
}

#[test]
fn cancel_then_487_is_cancelled_and_auth_challenges_do_not_end_calls() {
    let mut d = Driver::new();
    d.feed(
        msg("INVITE sip:b@y SIP/2.0", "1 INVITE", ""),
        Side::Client,
        0,
    );
    assert!(
        d.feed(
            msg("SIP/2.0 407 Proxy Authentication Required", "1 INVITE", ""),
            Side::Far,
            5
        )
        .ended
        .is_none()
    );
    d.feed(
        msg("INVITE sip:b@y SIP/2.0", "2 INVITE", ""),
        Side::Client,
        10,
    );
    d.feed(msg("SIP/2.0 180 Ringing", "2 INVITE", ""), Side::Far, 20);
    d.feed(
        msg("CANCEL sip:b@y SIP/2.0", "2 CANCEL", ""),
        Side::Client,
        30,
    );
    let c = d.feed(
        msg("SIP/2.0 487 Request Terminated", "2 INVITE", ""),
        Side::Far,
        35,
    );
    assert_eq!(c.ended, Some(Outcome::Cancelled));
}

#[test]
fn reinvites_are_counted_and_their_failure_keeps_the_call() {
    let mut d = Driver::new();
    d.feed(
        msg("INVITE sip:b@y SIP/2.0", "1 INVITE", ""),
        Side::Client,
        0,
    );
    d.feed(msg("SIP/2.0 200 OK", "1 INVITE", ""), Side::Far, 10);
    d.feed(msg("ACK sip:b@y SIP/2.0", "1 ACK", ""), Side::Client, 11);
    d.feed(
        msg("INVITE sip:a@x SIP/2.0", "2 INVITE", ""),
        Side::Far,
        100,
    );
    let c = d.feed(
        msg("SIP/2.0 491 Request Pending", "2 INVITE", ""),
        Side::Client,
        110,
    );
    assert!(c.ended.is_none());
    let call = d.table.get(&key1()).unwrap();
    assert_eq!(call.reinvites, 1);
    assert_eq!(call.state, CallState::Confirmed);
}

#[test]
fn register_transactions_complete_with_their_result_and_unanswered_calls_expire() {
    let mut d = Driver::new();
    d.feed(
        msg("REGISTER sip:y SIP/2.0", "5 REGISTER", "Expires: 3600\r\n"),
        Side::Client,
        0,
    );
    let c = d.feed(msg("SIP/2.0 200 OK", "5 REGISTER", ""), Side::Far, 12);
    let (r, code, _) = c.registered.unwrap();
    assert_eq!(
        (r.aor.as_str(), r.expires, code),
        ("sip:b@y", Some(3600), 200)
    );

    d.feed(
        msg("INVITE sip:b@y SIP/2.0", "1 INVITE", ""),
        Side::Client,
        0,
    );
    assert!(
        d.table
            .expire(d.t0 + Duration::from_secs(5), Duration::from_secs(10))
            .is_empty()
    );
    assert_eq!(
        d.table
            .expire(d.t0 + Duration::from_secs(11), Duration::from_secs(10)),
        vec![key1()]
    );
}

#[test]
fn a_bye_from_another_client_or_transport_does_not_end_the_call() {
    let mut d = Driver::new();
    d.feed(
        msg("INVITE sip:b@y SIP/2.0", "1 INVITE", ""),
        Side::Client,
        0,
    );
    d.feed(msg("SIP/2.0 200 OK", "1 INVITE", ""), Side::Far, 100);
    let bye = msg("BYE sip:b@y SIP/2.0", "2 BYE", "");
    let t = d.t0 + Duration::from_millis(200);
    let (client, far) = (CLIENT.parse().unwrap(), FAR.parse().unwrap());
    // Same Call-ID, another client.
    let other: SocketAddr = "10.77.1.3:5061".parse().unwrap();
    let c = d
        .table
        .on_message(&bye, None, Side::Client, other, far, "udp", t);
    assert_eq!(c.ended, None);
    // Same client and Call-ID, over TCP.
    let c = d
        .table
        .on_message(&bye, None, Side::Client, client, far, "tcp", t);
    assert_eq!(c.ended, None);
    let key = CallKey::new("call-1", client, far, "udp");
    assert_eq!(d.table.get(&key).unwrap().state, CallState::Answered);
    // The call's own BYE, from another source port of the same client (a new connection).
    let port2: SocketAddr = "10.77.1.2:40000".parse().unwrap();
    let c = d
        .table
        .on_message(&bye, None, Side::Client, port2, far, "udp", t);
    assert_eq!(c.ended, Some(Outcome::Completed));
}
