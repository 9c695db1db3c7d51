//! Signalling addresses for anchored (NAT'd) clients, as the kernel's SIP NAT helper
//! (`nf_nat_sip`) rewrites them.
//!
//! With `anchor_media` on, the client's private addresses must not leak to the far end, or its
//! answers and in-dialog requests go nowhere. The relay already sends from the gateway, so the
//! far end sees the gateway's relay address (`relay`). Requests and responses the client sends
//! get their top `Via` sent-by and their `Contact` pointed at that address; responses coming
//! back get the client's own `Via` restored; requests coming back (a BYE, a re-INVITE) get the
//! client's own Request-URI restored. Everything else in the head, and the body, is kept
//! byte for byte. Without anchoring none of this runs: observation forwards unchanged.
use super::message::{head_end, leading_crlf};

/// What was replaced, to put back on the way in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Original {
    /// The client's top-Via sent-by (`host:port`).
    pub via: Option<String>,
    /// The client's Contact `host:port`.
    pub contact: Option<String>,
}

fn is_header(line: &str, long: &str, short: &str) -> bool {
    line.split_once(':').is_some_and(|(n, _)| {
        let n = n.trim();
        n.eq_ignore_ascii_case(long) || n.eq_ignore_ascii_case(short)
    })
}

/// Byte range of the Via sent-by in a Via header line (`SIP/2.0/UDP host:port;…`).
fn via_sent_by(line: &str) -> Option<(usize, usize)> {
    let colon = line.find(':')? + 1;
    let rest = &line[colon..];
    let proto_end = rest.find("SIP/2.0/")? + "SIP/2.0/".len();
    let after_proto = &rest[proto_end..];
    let ws = after_proto.find([' ', '\t'])?;
    let start_rel =
        proto_end + ws + (after_proto[ws..].len() - after_proto[ws..].trim_start().len());
    let tail = &rest[start_rel..];
    let len = tail.find([';', ',', ' ', '\r', '\n']).unwrap_or(tail.len());
    (len > 0).then_some((colon + start_rel, colon + start_rel + len))
}

/// Byte range of `host:port` in the first SIP URI of `s` (after `user@`, else after `sip:`).
fn uri_hostport(s: &str) -> Option<(usize, usize)> {
    let start = s.find("sip:").or_else(|| s.find("sips:"))?;
    let scheme_end = start + s[start..].find(':')? + 1;
    let uri = &s[scheme_end..];
    let end = uri
        .find([';', '>', '?', ' ', '\r', '\n', ','])
        .unwrap_or(uri.len());
    let host_start = uri[..end].find('@').map_or(0, |a| a + 1);
    (host_start < end).then_some((scheme_end + host_start, scheme_end + end))
}

fn edit_head(bytes: &[u8], mut f: impl FnMut(usize, &str) -> Option<String>) -> Option<Vec<u8>> {
    // CRLFs before the start line (RFC 3261 §7.5) are kept as they came.
    let (lead, bytes) = bytes.split_at(leading_crlf(bytes));
    let (head_len, _) = head_end(bytes)?;
    let head = std::str::from_utf8(&bytes[..head_len]).ok()?;
    let mut out = Vec::with_capacity(lead.len() + bytes.len() + 32);
    out.extend_from_slice(lead);
    let mut changed = false;
    for (i, line) in head.split_inclusive('\n').enumerate() {
        match f(i, line) {
            Some(new) => {
                changed = true;
                out.extend_from_slice(new.as_bytes());
            }
            None => out.extend_from_slice(line.as_bytes()),
        }
    }
    out.extend_from_slice(&bytes[head_len..]);
    changed.then_some(out)
}

fn splice(line: &str, (a, b): (usize, usize), with: &str) -> String {
    format!("{}{with}{}", &line[..a], &line[b..])
}

/// Outgoing (client → far end): top Via sent-by and Contact become `relay`. Returns the new
/// bytes (if anything changed) and what was replaced.
pub fn outgoing(bytes: &[u8], relay: &str, is_request: bool) -> (Option<Vec<u8>>, Original) {
    let mut orig = Original::default();
    let mut via_done = !is_request;
    let out = edit_head(bytes, |i, line| {
        if i == 0 {
            return None;
        }
        if !via_done && is_header(line, "via", "v") {
            via_done = true;
            let r = via_sent_by(line)?;
            orig.via = Some(line[r.0..r.1].to_string());
            return Some(splice(line, r, relay));
        }
        if orig.contact.is_none() && is_header(line, "contact", "m") {
            let r = uri_hostport(line)?;
            orig.contact = Some(line[r.0..r.1].to_string());
            return Some(splice(line, r, relay));
        }
        None
    });
    (out, orig)
}

/// Incoming (far end → client): restore the top Via sent-by of a response, or the
/// Request-URI host:port of a request, where they carry `relay`.
pub fn incoming(bytes: &[u8], relay: &str, orig: &Original, is_request: bool) -> Option<Vec<u8>> {
    let mut via_done = is_request;
    edit_head(bytes, |i, line| {
        if i == 0 {
            if !is_request {
                return None;
            }
            let contact = orig.contact.as_deref()?;
            let r = uri_hostport(line)?;
            return (&line[r.0..r.1] == relay).then(|| splice(line, r, contact));
        }
        if !via_done && is_header(line, "via", "v") {
            via_done = true;
            let via = orig.via.as_deref()?;
            let r = via_sent_by(line)?;
            return (&line[r.0..r.1] == relay).then(|| splice(line, r, via));
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:bob@10.77.2.2:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.77.1.2:5061;branch=z9hG4bK-1\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-0\r\nContact: <sip:alice@10.77.1.2:5061;transport=udp>;expires=60\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn outgoing_points_via_and_contact_at_the_relay() {
        let (out, orig) = outgoing(INVITE.as_bytes(), "10.77.2.1:40000", true);
        let text = String::from_utf8(out.unwrap()).unwrap();
        assert!(
            text.contains("Via: SIP/2.0/UDP 10.77.2.1:40000;branch=z9hG4bK-1\r\n"),
            "{text}"
        );
        assert!(
            text.contains("Via: SIP/2.0/UDP 10.0.0.9:5060;"),
            "only the top Via: {text}"
        );
        assert!(text.contains("Contact: <sip:alice@10.77.2.1:40000;transport=udp>;expires=60\r\n"));
        assert_eq!(orig.via.as_deref(), Some("10.77.1.2:5061"));
        assert_eq!(orig.contact.as_deref(), Some("10.77.1.2:5061"));
        assert_eq!(
            text.len(),
            INVITE.len() + 2 * ("10.77.2.1:40000".len() - "10.77.1.2:5061".len())
        );
    }

    #[test]
    fn incoming_restores_the_clients_own_addresses() {
        let orig = Original {
            via: Some("10.77.1.2:5061".into()),
            contact: Some("10.77.1.2:5061".into()),
        };
        let ok = "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 10.77.2.1:40000;branch=z9hG4bK-1;received=10.77.2.1\r\nContent-Length: 0\r\n\r\n";
        let back =
            String::from_utf8(incoming(ok.as_bytes(), "10.77.2.1:40000", &orig, false).unwrap())
                .unwrap();
        assert!(
            back.contains("v: SIP/2.0/UDP 10.77.1.2:5061;branch=z9hG4bK-1;received"),
            "{back}"
        );
        let bye = "BYE sip:alice@10.77.2.1:40000;transport=udp SIP/2.0\r\nVia: SIP/2.0/UDP 10.77.2.2:5060;branch=x\r\n\r\n";
        let back =
            String::from_utf8(incoming(bye.as_bytes(), "10.77.2.1:40000", &orig, true).unwrap())
                .unwrap();
        assert!(
            back.starts_with("BYE sip:alice@10.77.1.2:5061;transport=udp SIP/2.0\r\n"),
            "{back}"
        );
        assert!(
            back.contains("Via: SIP/2.0/UDP 10.77.2.2:5060;branch=x"),
            "far end's Via untouched"
        );
        // Nothing of ours in it: nothing changes.
        assert!(
            incoming(
                b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP 1.2.3.4:5;b=1\r\n\r\n",
                "10.77.2.1:40000",
                &orig,
                false
            )
            .is_none()
        );
    }

    #[test]
    fn odd_headers_are_left_alone() {
        let (out, _) = outgoing(
            b"INVITE sip:x SIP/2.0\r\nVia: garbage\r\nContact: *\r\n\r\n",
            "1.2.3.4:5",
            true,
        );
        assert!(out.is_none());
    }
}
