use super::*;

const INVITE: &str = "INVITE sip:service@10.77.2.2:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.77.1.2:5061;branch=z9hG4bK-1\r\n\
From: sipp <sip:sipp@10.77.1.2:5061>;tag=abc\r\n\
To: service <sip:service@10.77.2.2:5060>\r\n\
Call-ID: 1-42@10.77.1.2\r\n\
CSeq: 1 INVITE\r\n\
Contact: sip:sipp@10.77.1.2:5061\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\nTRAILING";

#[test]
fn rsip_parses_a_plain_invite_and_the_body_is_cut_to_content_length() {
    let m = parse(INVITE.as_bytes()).unwrap();
    assert_eq!(m.parser, "rsip");
    assert_eq!(m.method(), Some("INVITE"));
    assert_eq!(m.call_id.as_deref(), Some("1-42@10.77.1.2"));
    assert_eq!(m.cseq, Some((1, "INVITE".into())));
    assert_eq!(m.from.as_ref().unwrap().tag.as_deref(), Some("abc"));
    assert_eq!(m.from.as_ref().unwrap().uri, "sip:sipp@10.77.1.2:5061");
    assert_eq!(m.to.as_ref().unwrap().tag, None);
    assert_eq!(m.body, b"v=0\n");
    assert!(m.has_sdp());
}

#[test]
fn compact_headers_are_expanded() {
    let text = "SIP/2.0 486 Busy Here\r\ni: xyz\r\nv: SIP/2.0/UDP 1.2.3.4\r\nf: <sip:a@b>;tag=1\r\nt: <sip:c@d>;tag=2\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n";
    let m = parse(text.as_bytes()).unwrap();
    assert_eq!(m.status(), Some(486));
    assert_eq!(m.call_id.as_deref(), Some("xyz"));
    assert_eq!(m.to.as_ref().unwrap().tag.as_deref(), Some("2"));
    assert_eq!(m.method(), Some("INVITE"));
    assert_eq!(
        normalize_compact("SIP/2.0 200 OK\r\ni: a\r\nc: application/sdp\r\n"),
        "SIP/2.0 200 OK\r\nCall-ID: a\r\nContent-Type: application/sdp\r\n"
    );
}

#[test]
fn reason_phrase_is_kept_as_sent() {
    let text =
        "SIP/2.0 486 Busy Here Now\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let m = parse(text.as_bytes()).unwrap();
    assert_eq!(
        m.start,
        StartLine::Response {
            code: 486,
            reason: "Busy Here Now".into()
        }
    );
}

#[test]
fn unknown_methods_fall_back_to_the_scan() {
    let text = "FROBNICATE sip:x@y SIP/2.0\r\nCall-ID: c1\r\nCSeq: 7 FROBNICATE\r\nFrom: <sip:a@b>;tag=t\r\nl: 0\r\n\r\n";
    let m = parse(text.as_bytes()).unwrap();
    assert_eq!(m.parser, "scan");
    assert!(m.rsip_error.is_some());
    assert_eq!(m.method(), Some("FROBNICATE"));
    assert_eq!(m.cseq, Some((7, "FROBNICATE".into())));
    assert_eq!(m.from.unwrap().tag.as_deref(), Some("t"));
}

#[test]
fn garbage_and_truncation_are_errors_not_panics() {
    assert_eq!(parse(b"hello"), Err(SipParseError::NoHeaderEnd));
    assert!(matches!(
        parse(b"NOT A SIP LINE AT ALL\r\n\r\n"),
        Err(SipParseError::StartLine(_))
    ));
    assert!(matches!(
        parse(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 99\r\n\r\nshort"),
        Err(SipParseError::ShortBody {
            declared: 99,
            got: 5
        })
    ));
    assert!(matches!(
        parse(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: x\r\n\r\n"),
        Err(SipParseError::ContentLength(_))
    ));
    assert_eq!(
        parse(&[0xff, 0xfe, b'\r', b'\n', b'\r', b'\n']),
        Err(SipParseError::NotUtf8)
    );
}

#[test]
fn tcp_streams_are_framed_by_content_length() {
    let two = INVITE.to_string();
    let first_len = INVITE.find("TRAILING").unwrap();
    let stream = format!("{}{}", &two[..first_len], &two[..first_len]);
    assert_eq!(frame(stream.as_bytes()), Frame::Message(first_len));
    assert_eq!(
        frame(&stream.as_bytes()[..first_len - 2]),
        Frame::Incomplete
    );
    assert_eq!(frame(b"\r\n\r\nINVITE"), Frame::KeepAlive(4));
    assert_eq!(
        frame(b"INVITE sip:a@b SIP/2.0\r\nCall-ID: x\r\n\r\n"),
        Frame::Invalid
    );
    assert_eq!(
        frame(b"INVITE sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc"),
        Frame::Message(35)
    );
}

#[test]
fn a_new_body_updates_only_the_content_length() {
    let out = with_body(INVITE.as_bytes(), b"v=0\r\nlonger\r\n").unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains("\r\nContent-Length: 13\r\n\r\nv=0\r\nlonger\r\n"),
        "{text}"
    );
    assert!(text.starts_with("INVITE sip:service@10.77.2.2:5060 SIP/2.0\r\nVia:"));
    let m = parse(text.as_bytes()).unwrap();
    assert_eq!(m.body, b"v=0\r\nlonger\r\n");
}
