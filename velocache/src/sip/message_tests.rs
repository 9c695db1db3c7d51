use super::*;

/// An RFC 4475 torture message, byte for byte (`tests/data/rfc4475`).
pub(crate) fn rfc4475(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/rfc4475")
        .join(format!("{name}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

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

#[test]
fn a_folded_content_length_is_read_unfolded() {
    // RFC 3261 §7.3.1 allows folding any header; this one used to be "bad Content-Length ``".
    let msg = String::from_utf8(rfc4475("sdp01")).unwrap();
    let folded = msg.replace("Content-Length: 150\r\n", "Content-Length:\r\n   150\r\n");
    assert_ne!(folded, msg);
    let m = parse(folded.as_bytes()).unwrap();
    assert_eq!(m.call_id.as_deref(), Some("sdp01.ndaksdj9342dasdd"));
    assert_eq!(m.body.len(), 150);
    assert!(m.has_sdp());
    // A new body replaces the folded value, continuation line included.
    let out = String::from_utf8(with_body(folded.as_bytes(), b"v=0\r\n").unwrap()).unwrap();
    assert!(
        out.contains("\r\nContent-Length: 5\r\nContent-Type:"),
        "{out}"
    );
    assert_eq!(parse(out.as_bytes()).unwrap().body, b"v=0\r\n");
}

#[test]
fn crlf_before_the_start_line_is_ignored() {
    // RFC 3261 §7.5: used to be "bad start line ``".
    for lead in ["\r\n", "\r\n\r\n", "\n"] {
        let mut bytes = lead.as_bytes().to_vec();
        bytes.extend_from_slice(&rfc4475("sdp01"));
        let m = parse(&bytes).unwrap();
        assert_eq!(m.method(), Some("INVITE"), "{lead:?}");
        assert_eq!(m.body.len(), 150, "{lead:?}");
        let out = with_body(&bytes, b"").unwrap();
        assert!(out.starts_with(lead.as_bytes()) && out.ends_with(b"\r\n\r\n"));
    }
}

#[test]
fn the_short_tortuous_invite_is_read_through_its_folding() {
    let m = parse(&rfc4475("wsinv")).unwrap();
    assert_eq!(m.method(), Some("INVITE"));
    assert_eq!(m.call_id.as_deref(), Some("wsinv.ndaksdj@192.0.2.1"));
    assert_eq!(m.cseq, Some((9, "INVITE".into())), "folded CSeq");
    assert_eq!(m.from.as_ref().unwrap().tag.as_deref(), Some("98asjd8"));
    assert_eq!(m.body.len(), 150);
    assert!(m.has_sdp());
}

#[test]
fn extra_octets_after_a_udp_message_are_not_its_body() {
    let m = parse(&rfc4475("dblreq")).unwrap();
    assert_eq!(m.method(), Some("REGISTER"));
    assert!(m.body.is_empty());
}

#[test]
fn rfc4475_framing_errors_are_errors() {
    assert_eq!(
        parse(&rfc4475("mcl01")),
        Err(SipParseError::ConflictingContentLength(13, 5))
    );
    assert_eq!(
        parse(&rfc4475("ncl")),
        Err(SipParseError::ContentLength("-999".into()))
    );
    assert_eq!(
        parse(&rfc4475("clerr")),
        Err(SipParseError::ShortBody {
            declared: 9999,
            got: 154
        })
    );
}

/// What the observer makes of each RFC 4475 message (`tests/data/rfc4475/MANIFEST`): every
/// one is summarised or refused with a reason, none panics.
#[test]
fn every_rfc4475_message_is_summarised_or_refused_as_the_manifest_says() {
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/rfc4475/MANIFEST"),
    )
    .unwrap();
    let mut seen = 0;
    for line in manifest
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (name, observer) = (f[0], f[3]);
        let got = parse(&rfc4475(name));
        match observer {
            "parsed" => assert!(got.is_ok(), "{name}: {got:?}"),
            "malformed" => assert!(got.is_err(), "{name}: {got:?}"),
            other => panic!("{name}: unknown outcome {other}"),
        }
        seen += 1;
    }
    assert_eq!(seen, 49, "RFC 4475 has 49 messages");
}
