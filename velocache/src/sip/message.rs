//! SIP message parsing: bytes in, a [`SipMessage`] summary out.
//!
//! Parsing is done by `rsip`, with the three gaps of rsip 0.4 closed here:
//! - compact header names (`i:`, `f:`, `t:`, `v:`, `l:`, `m:`, `c:`, `k:`, `s:`, `e:`, `o:`,
//!   `r:`, `u:`, `a:`, `b:`, `x:`, `y:`, `j:`, `d:`) are expanded before rsip sees the head
//!   ([`normalize_compact`]), because rsip would file them as unknown headers;
//! - a message rsip rejects (an extension method such as `PUBLISH2`, an odd URI) is not lost:
//!   a minimal header scan ([`scan`]) still yields the Call-ID, CSeq, From/To and body, and the
//!   summary says which parser produced it;
//! - `Content-Length` is honoured: a UDP body is cut to the declared length (rsip takes
//!   whatever follows the head); `sip::stream` cuts TCP byte streams by it;
//! - header folding (RFC 3261 §7.3.1: a line starting with whitespace continues the previous
//!   one) is undone before anything reads a header, and CRLFs before the start line are
//!   skipped (§7.5), so a folded `Content-Length` or a leading keep-alive is not "malformed".
//!
//! Nothing here decides what to do with a message; a parse failure is an `Err` the caller logs
//! before forwarding the bytes untouched.
use std::{borrow::Cow, convert::TryFrom};

use rsip::{
    headers::{ToTypedHeader as _, UntypedHeader as _},
    message::HeadersExt as _,
};
use thiserror::Error;

/// Largest SIP message accepted (head and body); larger input is not SIP we can observe.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why bytes are not a SIP message we can summarise.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SipParseError {
    /// No blank line ends the head.
    #[error("no end of headers")]
    NoHeaderEnd,
    /// The first line is neither `METHOD URI SIP/2.0` nor `SIP/2.0 CODE REASON`.
    #[error("bad start line `{0}`")]
    StartLine(String),
    /// `Content-Length` is not a number.
    #[error("bad Content-Length `{0}`")]
    ContentLength(String),
    /// Two `Content-Length` headers disagree (RFC 4475 §3.3.9): where the body ends is unknown.
    #[error("conflicting Content-Length values `{0}` and `{1}`")]
    ConflictingContentLength(usize, usize),
    /// The body is shorter than `Content-Length` says (a truncated datagram).
    #[error("body is {got} bytes, Content-Length says {declared}")]
    ShortBody {
        /// Declared length.
        declared: usize,
        /// Bytes present.
        got: usize,
    },
    /// Larger than [`MAX_MESSAGE`].
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The head is not UTF-8.
    #[error("headers are not UTF-8")]
    NotUtf8,
}

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// A request.
    Request {
        /// Method, as sent (`INVITE`, `BYE`, or an extension).
        method: String,
        /// Request-URI.
        uri: String,
    },
    /// A response.
    Response {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// A From or To header: the URI and the tag.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Party {
    /// The URI, e.g. `sip:alice@example.org`.
    pub uri: String,
    /// The `tag` parameter.
    pub tag: Option<String>,
}

/// What the observer needs from one SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    /// Request or response line.
    pub start: StartLine,
    /// `Call-ID`.
    pub call_id: Option<String>,
    /// `CSeq` number and method.
    pub cseq: Option<(u32, String)>,
    /// `From`.
    pub from: Option<Party>,
    /// `To`.
    pub to: Option<Party>,
    /// `Content-Type`, lower-cased, parameters dropped.
    pub content_type: Option<String>,
    /// `Expires`, if present.
    pub expires: Option<u32>,
    /// The body, cut to `Content-Length`.
    pub body: Vec<u8>,
    /// `"rsip"`, or `"scan"` when rsip rejected the message and the fallback read it.
    pub parser: &'static str,
    /// rsip's complaint when the fallback was used.
    pub rsip_error: Option<String>,
}

impl SipMessage {
    /// The method for requests, the CSeq method for responses.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => self.cseq.as_ref().map(|c| c.1.as_str()),
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    /// Whether the body is SDP.
    pub fn has_sdp(&self) -> bool {
        !self.body.is_empty() && self.content_type.as_deref() == Some("application/sdp")
    }
}

/// Compact forms (RFC 3261 §7.3.3 and the extensions that register one) and their long names.
const COMPACT: &[(&str, &str)] = &[
    ("a", "Accept-Contact"),
    ("b", "Referred-By"),
    ("c", "Content-Type"),
    ("d", "Request-Disposition"),
    ("e", "Content-Encoding"),
    ("f", "From"),
    ("i", "Call-ID"),
    ("j", "Reject-Contact"),
    ("k", "Supported"),
    ("l", "Content-Length"),
    ("m", "Contact"),
    ("o", "Event"),
    ("r", "Refer-To"),
    ("s", "Subject"),
    ("t", "To"),
    ("u", "Allow-Events"),
    ("v", "Via"),
    ("x", "Session-Expires"),
    ("y", "Identity"),
];

fn long_name(name: &str) -> Option<&'static str> {
    let name = name.trim();
    if name.len() != 1 {
        return None;
    }
    COMPACT
        .iter()
        .find(|(short, _)| short.eq_ignore_ascii_case(name))
        .map(|(_, long)| *long)
}

/// Expand compact header names in a message head (start line and headers, no body). Lines
/// that are not headers (the start line, folded continuations) are left alone.
pub fn normalize_compact(head: &str) -> Cow<'_, str> {
    let needs = head.lines().skip(1).any(|l| {
        !l.starts_with([' ', '\t'])
            && l.split_once(':')
                .is_some_and(|(n, _)| long_name(n).is_some())
    });
    if !needs {
        return Cow::Borrowed(head);
    }
    let mut out = String::with_capacity(head.len() + 64);
    for (i, line) in head.split_inclusive('\n').enumerate() {
        if i > 0
            && !line.starts_with([' ', '\t'])
            && let Some((name, rest)) = line.split_once(':')
            && let Some(long) = long_name(name)
        {
            out.push_str(long);
            out.push(':');
            out.push_str(rest);
        } else {
            out.push_str(line);
        }
    }
    Cow::Owned(out)
}

/// Where the head ends: `(head length without the blank line, offset of the body)`. Bare LF
/// line ends are tolerated (RFC 3261 §7.5 asks receivers to).
pub fn head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = find(buf, b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = find(buf, b"\n\n").map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The head with folded lines joined (RFC 3261 §7.3.1): a line starting with a space or tab
/// continues the previous one, and the line break before it counts as one space.
pub fn unfold(head: &str) -> Cow<'_, str> {
    let folded = |l: &str| l.starts_with([' ', '\t']);
    if !head.split_inclusive('\n').skip(1).any(folded) {
        return Cow::Borrowed(head);
    }
    let mut out = String::with_capacity(head.len());
    for (i, line) in head.split_inclusive('\n').enumerate() {
        if i > 0 && folded(line) {
            let kept = out.trim_end_matches(['\r', '\n']).len();
            out.truncate(kept);
            out.push(' ');
            out.push_str(line.trim_start_matches([' ', '\t']));
        } else {
            out.push_str(line);
        }
    }
    Cow::Owned(out)
}

/// How many CR and LF bytes precede the start line (RFC 3261 §7.5: ignored).
pub fn leading_crlf(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count()
}

/// The value of `Content-Length` (or `l`) in an unfolded head, if present. Repeated headers
/// must agree.
pub fn content_length(head: &str) -> Result<Option<usize>, SipParseError> {
    let mut found: Option<usize> = None;
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                let v = value.trim();
                let n = v
                    .parse::<usize>()
                    .map_err(|_| SipParseError::ContentLength(v.chars().take(40).collect()))?;
                match found {
                    Some(first) if first != n => {
                        return Err(SipParseError::ConflictingContentLength(first, n));
                    }
                    _ => found = Some(n),
                }
            }
        }
    }
    Ok(found)
}

/// Parse one message (a UDP datagram, or a frame cut by [`frame`]).
pub fn parse(bytes: &[u8]) -> Result<SipMessage, SipParseError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(SipParseError::TooLarge);
    }
    let bytes = &bytes[leading_crlf(bytes)..];
    let (head_len, body_at) = head_end(bytes).ok_or(SipParseError::NoHeaderEnd)?;
    let head = std::str::from_utf8(&bytes[..head_len]).map_err(|_| SipParseError::NotUtf8)?;
    let unfolded = unfold(head);
    let head = normalize_compact(&unfolded);
    let rest = &bytes[body_at..];
    let body = match content_length(&head)? {
        Some(len) if len > rest.len() => {
            return Err(SipParseError::ShortBody {
                declared: len,
                got: rest.len(),
            });
        }
        Some(len) => &rest[..len],
        // UDP may omit it (RFC 3261 §18.3): the body runs to the end of the datagram.
        None => rest,
    };
    let mut normalized = Vec::with_capacity(head.len() + 4 + body.len());
    normalized.extend_from_slice(head.as_bytes());
    normalized.extend_from_slice(b"\r\n\r\n");
    normalized.extend_from_slice(body);
    match rsip::SipMessage::try_from(normalized.as_slice()) {
        Ok(msg) => Ok(from_rsip(&msg, &head, body)),
        Err(e) => {
            let mut m = scan(&head, body)?;
            m.rsip_error = Some(e.to_string());
            Ok(m)
        }
    }
}

fn from_rsip(msg: &rsip::SipMessage, head: &str, body: &[u8]) -> SipMessage {
    let start = match msg {
        rsip::SipMessage::Request(r) => StartLine::Request {
            method: r.method.to_string(),
            uri: r.uri.to_string(),
        },
        rsip::SipMessage::Response(r) => StartLine::Response {
            code: r.status_code.code(),
            reason: reason_phrase(head),
        },
    };
    let party =
        |typed: Option<(String, Option<String>)>| typed.map(|(uri, tag)| Party { uri, tag });
    let from = party(msg.from_header().ok().and_then(|h| {
        let t = h.typed().ok()?;
        Some((t.uri.to_string(), t.tag().map(|t| t.to_string())))
    }));
    let to = party(msg.to_header().ok().and_then(|h| {
        let t = h.typed().ok()?;
        Some((t.uri.to_string(), t.tag().map(|t| t.to_string())))
    }));
    let cseq = msg.cseq_header().ok().and_then(|h| {
        let t = h.typed().ok()?;
        Some((t.seq, t.method.to_string()))
    });
    // Anything rsip could not type is read the simple way rather than dropped.
    let scanned = scan_headers(head);
    SipMessage {
        start,
        call_id: msg
            .call_id_header()
            .ok()
            .map(|h| h.value().to_string())
            .or(scanned.call_id),
        cseq: cseq.or(scanned.cseq),
        from: from.or(scanned.from),
        to: to.or(scanned.to),
        content_type: scanned.content_type,
        expires: scanned.expires,
        body: body.to_vec(),
        parser: "rsip",
        rsip_error: None,
    }
}

fn reason_phrase(head: &str) -> String {
    head.lines()
        .next()
        .and_then(|l| l.splitn(3, ' ').nth(2))
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Headers read by [`scan_headers`].
#[derive(Default)]
struct Scanned {
    call_id: Option<String>,
    cseq: Option<(u32, String)>,
    from: Option<Party>,
    to: Option<Party>,
    content_type: Option<String>,
    expires: Option<u32>,
}

fn scan_headers(head: &str) -> Scanned {
    let mut s = Scanned::default();
    for line in head.lines().skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let name = long_name(name).unwrap_or(name.trim());
        match name.to_ascii_lowercase().as_str() {
            "call-id" => s.call_id = Some(value.to_string()),
            "cseq" => {
                let mut it = value.split_whitespace();
                if let (Some(n), Some(m)) = (it.next(), it.next())
                    && let Ok(n) = n.parse()
                {
                    s.cseq = Some((n, m.to_string()));
                }
            }
            "from" => s.from = Some(party(value)),
            "to" => s.to = Some(party(value)),
            "content-type" => {
                let t = value.split(';').next().unwrap_or("").trim();
                s.content_type = Some(t.to_ascii_lowercase());
            }
            "expires" => s.expires = value.parse().ok(),
            _ => {}
        }
    }
    s
}

/// `"Alice" <sip:a@b>;tag=x` or `sip:a@b;tag=x` → URI and tag.
fn party(value: &str) -> Party {
    let (uri, params) = match (value.find('<'), value.find('>')) {
        (Some(a), Some(b)) if a < b => (&value[a + 1..b], &value[b + 1..]),
        _ => match value.split_once(';') {
            Some((u, p)) => (u, p),
            None => (value, ""),
        },
    };
    let tag = params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("tag")
            .then(|| v.trim().to_string())
    });
    Party {
        uri: uri.trim().to_string(),
        tag,
    }
}

/// The fallback: read the start line and the few headers the observer needs.
pub fn scan(head: &str, body: &[u8]) -> Result<SipMessage, SipParseError> {
    let first = head.lines().next().unwrap_or("").trim();
    let start = if let Some(rest) = first.strip_prefix("SIP/2.0 ") {
        let mut it = rest.splitn(2, ' ');
        let code = it
            .next()
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (100..700).contains(c))
            .ok_or_else(|| SipParseError::StartLine(first.to_string()))?;
        StartLine::Response {
            code,
            reason: it.next().unwrap_or("").trim().to_string(),
        }
    } else {
        let parts: Vec<&str> = first.split_whitespace().collect();
        match parts.as_slice() {
            [method, uri, "SIP/2.0"]
                if !method.is_empty()
                    && method
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)) =>
            {
                StartLine::Request {
                    method: method.to_string(),
                    uri: uri.to_string(),
                }
            }
            _ => {
                let shown: String = first.chars().take(80).collect();
                return Err(SipParseError::StartLine(shown));
            }
        }
    };
    let s = scan_headers(head);
    Ok(SipMessage {
        start,
        call_id: s.call_id,
        cseq: s.cseq,
        from: s.from,
        to: s.to,
        content_type: s.content_type,
        expires: s.expires,
        body: body.to_vec(),
        parser: "scan",
        rsip_error: None,
    })
}

/// The same message with another body: every head byte is kept except the `Content-Length`
/// (or `l`) value, which is set to the new body's length. `None` if `bytes` has no head end.
pub fn with_body(bytes: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let (lead, bytes) = bytes.split_at(leading_crlf(bytes));
    let (head_len, body_at) = head_end(bytes)?;
    let head = std::str::from_utf8(&bytes[..head_len]).ok()?;
    let mut out = Vec::with_capacity(lead.len() + bytes.len() + 32);
    out.extend_from_slice(lead);
    // A folded Content-Length value continues on the lines after it: they go with it.
    let mut in_length = false;
    for (i, line) in head.split_inclusive('\n').enumerate() {
        if in_length && line.starts_with([' ', '\t']) {
            continue;
        }
        in_length = false;
        if i > 0
            && !line.starts_with([' ', '\t'])
            && let Some((name, _)) = line.split_once(':')
            && (name.trim().eq_ignore_ascii_case("content-length")
                || name.trim().eq_ignore_ascii_case("l"))
        {
            let ending = if line.ends_with("\r\n") {
                "\r\n"
            } else if line.ends_with('\n') {
                "\n"
            } else {
                ""
            };
            out.extend_from_slice(format!("{}: {}{ending}", name.trim(), body.len()).as_bytes());
            in_length = true;
        } else {
            out.extend_from_slice(line.as_bytes());
        }
    }
    out.extend_from_slice(&bytes[head_len..body_at]);
    out.extend_from_slice(body);
    Some(out)
}

#[cfg(test)]
#[path = "message_tests.rs"]
pub(crate) mod tests;
