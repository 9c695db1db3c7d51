use super::*;
use crate::sip::message::tests::rfc4475;

const INVITE: &str = "INVITE sip:service@10.77.2.2:5060 SIP/2.0\r\n\
Call-ID: 1-42@10.77.1.2\r\n\
CSeq: 1 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

/// Every piece of `stream` fed `chunk` bytes at a time, then what `finish` leaves.
fn pieces(stream: &[u8], chunk: usize) -> (Vec<Piece>, Option<Bytes>) {
    let mut d = Deframer::new();
    let mut out = Vec::new();
    for c in stream.chunks(chunk.max(1)) {
        d.push(c);
        while let Some(p) = d.next_piece() {
            out.push(p);
        }
    }
    (out, d.finish())
}

fn bytes_of(p: &Piece) -> &[u8] {
    match p {
        Piece::Message(b) | Piece::Forward(b, _) => b,
    }
}

fn messages(p: &[Piece]) -> Vec<&[u8]> {
    p.iter()
        .filter_map(|p| match p {
            Piece::Message(b) => Some(&b[..]),
            Piece::Forward(..) => None,
        })
        .collect()
}

#[test]
fn tcp_streams_are_framed_by_content_length() {
    let two = format!("{INVITE}{INVITE}");
    assert_eq!(frame(two.as_bytes()), Frame::Message(INVITE.len()));
    assert_eq!(
        frame(&two.as_bytes()[..INVITE.len() - 2]),
        Frame::Incomplete
    );
    assert_eq!(frame(b"\r\n\r\nINVITE"), Frame::KeepAlive(4));
    assert_eq!(
        frame(b"INVITE sip:a@b SIP/2.0\r\nl: 3\r\n\r\nabc"),
        Frame::Message(35)
    );
}

#[test]
fn a_missing_content_length_frames_an_empty_body() {
    // Used to switch the connection to a blind copy.
    let bye = "BYE sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: 2 BYE\r\n\r\n";
    let stream = format!("{bye}{INVITE}");
    assert_eq!(frame(stream.as_bytes()), Frame::Message(bye.len()));
    let (p, rest) = pieces(stream.as_bytes(), 5);
    assert_eq!(messages(&p), vec![bye.as_bytes(), INVITE.as_bytes()]);
    assert!(rest.is_none());
}

#[test]
fn a_folded_content_length_frames_over_tcp() {
    let folded = String::from_utf8(rfc4475("sdp01"))
        .unwrap()
        .replace("Content-Length: 150\r\n", "Content-Length:\r\n 150\r\n");
    let stream = format!("{folded}{INVITE}");
    let (p, _) = pieces(stream.as_bytes(), 64);
    assert_eq!(messages(&p), vec![folded.as_bytes(), INVITE.as_bytes()]);
    // And the torture INVITE, folded everywhere with `Content-Length   : 150`.
    let wsinv = rfc4475("wsinv");
    assert_eq!(frame(&wsinv), Frame::Message(wsinv.len()));
}

#[test]
fn crlf_before_a_message_is_a_keepalive_then_the_message() {
    let stream = format!("\r\n\r\n{INVITE}\r\n{INVITE}");
    let (p, _) = pieces(stream.as_bytes(), 3);
    assert_eq!(messages(&p).len(), 2);
    assert!(p.iter().all(|p| matches!(
        p,
        Piece::Message(_) | Piece::Forward(_, Unobserved::KeepAlive)
    )));
}

#[test]
fn after_an_unframable_head_framing_resumes_at_the_next_start_line() {
    // Conflicting lengths, then a negative one: neither body can be found, the INVITE after
    // them is still a message.
    let mut stream = rfc4475("mcl01");
    stream.extend_from_slice(&rfc4475("ncl"));
    stream.extend_from_slice(INVITE.as_bytes());
    let (p, rest) = pieces(&stream, 11);
    assert!(rest.is_none());
    assert_eq!(messages(&p), vec![INVITE.as_bytes()]);
    let reported: Vec<&Unobserved> = p
        .iter()
        .filter_map(|p| match p {
            Piece::Forward(_, why) if *why != Unobserved::Continued => Some(why),
            _ => None,
        })
        .collect();
    assert_eq!(
        reported,
        vec![
            &Unobserved::Unframable(SipParseError::ConflictingContentLength(13, 5)),
            &Unobserved::Unframable(SipParseError::ContentLength("-999".into())),
        ],
        "each head reported once, its body with it"
    );
}

#[test]
fn garbage_is_reported_once_and_the_next_message_is_found() {
    let noise: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut stream = noise.clone();
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(INVITE.as_bytes());
    let (p, _) = pieces(&stream, 100);
    assert_eq!(messages(&p), vec![INVITE.as_bytes()]);
    let junk = p
        .iter()
        .filter(|p| matches!(p, Piece::Forward(_, Unobserved::Junk)))
        .count();
    assert_eq!(junk, 1);
}

#[test]
fn a_message_cut_short_is_left_for_the_observer_at_close() {
    // Content-Length: 9999 and 154 bytes of body: used to be flushed with no log line.
    let clerr = rfc4475("clerr");
    let (p, rest) = pieces(&clerr, 50);
    assert!(p.is_empty());
    assert_eq!(rest.as_deref(), Some(&clerr[..]));
}

#[test]
fn a_message_too_large_to_observe_passes_through_and_framing_resumes() {
    let big = format!(
        "MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 100000\r\n\r\n{}",
        "x".repeat(100_000)
    );
    let stream = format!("{big}{INVITE}");
    let (p, rest) = pieces(stream.as_bytes(), 4096);
    assert!(rest.is_none());
    assert_eq!(messages(&p), vec![INVITE.as_bytes()]);
    assert!(matches!(&p[0], Piece::Forward(_, Unobserved::TooLarge(n)) if *n == big.len()));
}

#[test]
fn every_byte_of_the_torture_corpus_comes_out_once_in_order() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/rfc4475");
    let mut stream = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    names.sort();
    for n in &names {
        stream.extend_from_slice(&std::fs::read(n).unwrap());
    }
    stream.extend_from_slice(INVITE.as_bytes());
    for chunk in [1, 7, 512, 1 << 20] {
        let (p, rest) = pieces(&stream, chunk);
        let mut back: Vec<u8> = p.iter().flat_map(|p| bytes_of(p).to_vec()).collect();
        back.extend_from_slice(rest.as_deref().unwrap_or(&[]));
        assert_eq!(back, stream, "chunk {chunk}");
        assert_eq!(
            messages(&p).last().copied(),
            Some(INVITE.as_bytes()),
            "chunk {chunk}: the stream is in step at its end"
        );
        assert!(p.iter().all(|p| !bytes_of(p).is_empty()));
    }
}
