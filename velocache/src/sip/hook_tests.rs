//! The `sip` hook with hooks written in Rust: responses as RFC 3261 §8.2.6 builds them, the
//! rejected INVITE's transaction kept by the gateway, and tags and rejections in call records.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use super::*;
use crate::{
    rtp::NoMediaPlane,
    sip::{Metrics, Observer, Relay, Settings, dialog::Side},
};

/// Rejects INVITEs to `sip:900…` with 403; tags every message `screened=yes|no`.
struct Screener {
    calls: AtomicUsize,
}

impl SipHook for Screener {
    fn on_message(&self, msg: HookMessage) -> HookOutcome {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let premium = msg
            .request_uri
            .as_deref()
            .is_some_and(|u| u.starts_with("sip:900"));
        HookOutcome {
            tags: vec![("screened".into(), if premium { "yes" } else { "no" }.into())],
            reject: premium.then(|| HookReject {
                status: 403,
                reason: "Premium rate numbers are blocked".into(),
                plugin: "screener".into(),
            }),
        }
    }
}

fn invite(user: &str, cseq: &str, method: &str) -> Vec<u8> {
    format!(
        "{method} sip:{user}@10.77.2.2:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.77.1.2:5061;branch=z9hG4bK-1;rport\r\n\
         v: SIP/2.0/UDP 10.77.1.9:5060;branch=z9hG4bK-0\r\n\
         From: sipp <sip:sipp@10.77.1.2:5061>;tag=abc\r\n\
         To: <sip:{user}@10.77.2.2:5060>\r\n\
         Call-ID: call-{user}@lab\r\n\
         CSeq: {cseq}\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn hop() -> Hop {
    Hop {
        from: Side::Client,
        client: "10.77.1.2:5061".parse().unwrap(),
        far: "10.77.2.2:5060".parse().unwrap(),
        transport: "udp",
        relay: None,
    }
}

fn observer(hook: Arc<dyn SipHook>) -> Observer {
    Observer::new(
        Settings {
            anchor: false,
            rtp_idle: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(5),
            max_calls: 10,
        },
        Arc::new(NoMediaPlane),
        None,
        Metrics::default(),
    )
    .with_hook(hook)
}

#[test]
fn the_response_copies_what_rfc_3261_asks_and_adds_a_to_tag() {
    let req = invite("900123", "1 INVITE", "INVITE");
    let resp = response(&req, 403, "Premium rate numbers are blocked").unwrap();
    let text = String::from_utf8(resp.clone()).unwrap();
    assert!(
        text.starts_with("SIP/2.0 403 Premium rate numbers are blocked\r\n"),
        "{text}"
    );
    let vias: Vec<&str> = text.lines().filter(|l| l.starts_with("Via: ")).collect();
    assert_eq!(
        vias,
        [
            "Via: SIP/2.0/UDP 10.77.1.2:5061;branch=z9hG4bK-1;rport",
            "Via: SIP/2.0/UDP 10.77.1.9:5060;branch=z9hG4bK-0",
        ],
        "every Via, in order, compact ones too"
    );
    assert!(text.contains("\r\nFrom: sipp <sip:sipp@10.77.1.2:5061>;tag=abc\r\n"));
    assert!(
        text.contains("\r\nTo: <sip:900123@10.77.2.2:5060>;tag=vc"),
        "{text}"
    );
    assert!(text.contains("\r\nCall-ID: call-900123@lab\r\n"));
    assert!(text.contains("\r\nCSeq: 1 INVITE\r\n"));
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
    // Our own parser reads it as the response to that INVITE.
    let parsed = message::parse(&resp).unwrap();
    assert_eq!(parsed.status(), Some(403));
    assert_eq!(parsed.cseq, Some((1, "INVITE".into())));
    assert!(parsed.to.unwrap().tag.is_some());
    // The same tag every time (retransmissions get the same answer).
    assert_eq!(response(&req, 403, "x"), response(&req, 403, "x"));
}

#[test]
fn a_to_tag_already_there_is_kept() {
    let req = String::from_utf8(invite("900", "2 INVITE", "INVITE"))
        .unwrap()
        .replace(
            "To: <sip:900@10.77.2.2:5060>",
            "To: <sip:900@10.77.2.2:5060>;tag=far1",
        );
    let text = String::from_utf8(response(req.as_bytes(), 486, "Busy").unwrap()).unwrap();
    assert!(
        text.contains("\r\nTo: <sip:900@10.77.2.2:5060>;tag=far1\r\n"),
        "{text}"
    );
    assert_eq!(
        text.matches("tag=").count(),
        2,
        "From's and the To's own: {text}"
    );
}

#[test]
fn a_rejected_invite_is_answered_again_and_its_ack_absorbed_without_asking_twice() {
    let hook = Arc::new(Screener {
        calls: AtomicUsize::new(0),
    });
    let screen = Screen::new(hook.clone());
    let req = invite("900555", "1 INVITE", "INVITE");
    let msg = message::parse(&req).unwrap();
    let Screened::Reject {
        response: first,
        status,
        plugin,
        tags,
        ..
    } = screen.screen(&msg, &req, &hop())
    else {
        panic!("not rejected");
    };
    assert_eq!((status, plugin.as_str()), (403, "screener"));
    assert_eq!(tags, [("screened".to_string(), "yes".to_string())]);
    assert_eq!(screen.screen(&msg, &req, &hop()), Screened::Again(first));
    let ack = invite("900555", "1 ACK", "ACK");
    let ack = message::parse(&ack).unwrap();
    assert_eq!(screen.screen(&ack, &[], &hop()), Screened::Absorb);
    assert_eq!(hook.calls.load(Ordering::Relaxed), 1, "asked once");
    // After Timer H the transaction is forgotten.
    screen.expire(Instant::now() + ABSORB_FOR + Duration::from_secs(1));
    assert!(matches!(
        screen.screen(&msg, &req, &hop()),
        Screened::Reject { .. }
    ));
}

#[test]
fn rejections_of_other_messages_or_with_odd_statuses_are_ignored() {
    struct Always(u16);
    impl SipHook for Always {
        fn on_message(&self, _: HookMessage) -> HookOutcome {
            HookOutcome {
                tags: Vec::new(),
                reject: Some(HookReject {
                    status: self.0,
                    reason: "no\r\nInjected: yes".into(),
                    plugin: "always".into(),
                }),
            }
        }
    }
    let options = invite("1", "1 OPTIONS", "OPTIONS");
    let msg = message::parse(&options).unwrap();
    let screen = Screen::new(Arc::new(Always(403)));
    assert_eq!(
        screen.screen(&msg, &options, &hop()),
        Screened::Observe(vec![])
    );
    let req = invite("1", "1 INVITE", "INVITE");
    let msg = message::parse(&req).unwrap();
    let screen = Screen::new(Arc::new(Always(200)));
    assert_eq!(screen.screen(&msg, &req, &hop()), Screened::Observe(vec![]));
    // A reason phrase cannot add a header.
    let screen = Screen::new(Arc::new(Always(403)));
    let Screened::Reject { response, .. } = screen.screen(&msg, &req, &hop()) else {
        panic!("not rejected");
    };
    let text = String::from_utf8(response).unwrap();
    assert!(
        text.starts_with("SIP/2.0 403 no  Injected: yes\r\n"),
        "{text}"
    );
}

#[test]
fn the_observer_answers_a_rejected_invite_and_records_the_call_with_its_tags() {
    let o = observer(Arc::new(Screener {
        calls: AtomicUsize::new(0),
    }));
    let relay = o.on_message(&invite("900777", "1 INVITE", "INVITE"), hop());
    let Relay::Answer(resp) = relay else {
        panic!("not answered: {relay:?}");
    };
    assert!(resp.starts_with(b"SIP/2.0 403 "));
    assert_eq!(
        o.on_message(&invite("900777", "1 ACK", "ACK"), hop()),
        Relay::Absorb
    );
    // A normal call goes on, tagged.
    assert_eq!(
        o.on_message(&invite("4711", "1 INVITE", "INVITE"), hop()),
        Relay::Forward
    );
    let report = o.report().unwrap();
    let rejected = &report.recent[0];
    assert_eq!(rejected.state, "rejected");
    assert_eq!(rejected.final_status, Some(403));
    assert_eq!(
        rejected.reason.as_deref(),
        Some("Premium rate numbers are blocked")
    );
    assert_eq!(rejected.ended_by.as_deref(), Some("plugin screener"));
    assert_eq!(
        rejected.tags.get("screened").map(String::as_str),
        Some("yes")
    );
    let active = &report.active[0];
    assert_eq!(active.tags.get("screened").map(String::as_str), Some("no"));
    assert_eq!(o.calls(), 1);
}
