//! DNS wire format: reading queries, scanning upstream answers, building small responses.
//!
//! A query enters as the client's bytes and leaves as a [`QueryView`] — offsets into those
//! bytes, never a copy — or as a [`Classified`] verdict saying why it cannot be answered from
//! the cache. The hot path ([`QueryView::parse`]) accepts only the plain shape nearly every
//! stub resolver sends (one question, no answer or authority records, at most one OPT) and
//! hands everything else to `hickory-proto`'s full parser ([`classify`]), which decides whether
//! the message is malformed (FORMERR) or merely unusual (forwarded uncached). A fuzz target
//! checks that whatever the fast path accepts, hickory accepts too and reads the same question.
//!
//! Upstream answers are walked once with hickory's `BinDecoder` ([`scan_answer`]) to find the
//! offset of every TTL field, the OPT record and the SOA's negative TTL; the cache keeps the
//! bytes and those offsets and patches them in place on every hit.
use hickory_proto::{
    op::Message,
    rr::Name,
    serialize::binary::{BinDecodable, BinDecoder},
};

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;
/// QR: the message is a response.
pub const FLAG_QR: u16 = 0x8000;
/// AA: authoritative answer.
pub const FLAG_AA: u16 = 0x0400;
/// TC: truncated.
pub const FLAG_TC: u16 = 0x0200;
/// RD: recursion desired.
pub const FLAG_RD: u16 = 0x0100;
/// RA: recursion available.
pub const FLAG_RA: u16 = 0x0080;
/// AD: authentic data.
pub const FLAG_AD: u16 = 0x0020;
/// CD: checking disabled.
pub const FLAG_CD: u16 = 0x0010;
const OPCODE_MASK: u16 = 0x7800;
const RCODE_MASK: u16 = 0x000f;

/// Record type of the EDNS pseudo-record.
pub const TYPE_OPT: u16 = 41;
/// Record type SOA.
pub const TYPE_SOA: u16 = 6;
/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Class IN.
pub const CLASS_IN: u16 = 1;
/// EDNS option code of Client Subnet (RFC 7871): answers depend on the client, never shared.
const OPT_CLIENT_SUBNET: u16 = 8;
/// The UDP payload size we advertise upstream and to clients (the DNS flag day 2020 value).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// Largest answer to a client that sent no EDNS.
pub const PLAIN_UDP_SIZE: usize = 512;

/// Response codes by name.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// Format error.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused.
    pub const REFUSED: u8 = 5;

    /// The mnemonic `dig` prints.
    pub fn name(code: u8) -> &'static str {
        match code {
            NOERROR => "NOERROR",
            FORMERR => "FORMERR",
            SERVFAIL => "SERVFAIL",
            NXDOMAIN => "NXDOMAIN",
            NOTIMP => "NOTIMP",
            REFUSED => "REFUSED",
            6 => "YXDOMAIN",
            7 => "YXRRSET",
            8 => "NXRRSET",
            9 => "NOTAUTH",
            10 => "NOTZONE",
            _ => "RESERVED",
        }
    }
}

/// A wire-format problem, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message ends early.
    #[error("message truncated at byte {at}")]
    Truncated {
        /// Offset where more bytes were needed.
        at: usize,
    },
    /// Something hickory-proto refused to decode.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Structurally valid but not what this code path accepts.
    #[error("unsupported message: {0}")]
    Unsupported(&'static str),
}

fn be16(b: &[u8], at: usize) -> Result<u16, WireError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(WireError::Truncated { at }),
    }
}

fn be32(b: &[u8], at: usize) -> Result<u32, WireError> {
    match b.get(at..at + 4) {
        Some(s) => Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
        None => Err(WireError::Truncated { at }),
    }
}

/// Read the 16-bit field at `at` (the caller knows it is in bounds, else 0).
pub fn get16(b: &[u8], at: usize) -> u16 {
    be16(b, at).unwrap_or(0)
}

/// Write the 16-bit field at `at` if it is in bounds.
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// What the client's OPT record said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdnsInfo {
    /// Advertised UDP payload size (at least 512).
    pub udp_size: u16,
    /// DO: the client wants DNSSEC records.
    pub dnssec_ok: bool,
}

/// A standard query in the plain shape, as offsets into the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryView {
    /// Query ID.
    pub id: u16,
    /// Header flags as sent.
    pub flags: u16,
    /// Length of the question name on the wire (labels and the final zero), starting at 12.
    pub qname_len: usize,
    /// Query type.
    pub qtype: u16,
    /// Query class.
    pub qclass: u16,
    /// End of the question section.
    pub question_end: usize,
    /// The client's EDNS, if it sent an OPT record.
    pub edns: Option<EdnsInfo>,
}

impl QueryView {
    /// The fast path: accept exactly one question with an uncompressed name, no answer or
    /// authority records, and at most one additional record which must be a version-0 OPT
    /// without Client Subnet. Anything else is `Err` and goes to [`classify`].
    pub fn parse(b: &[u8]) -> Result<QueryView, WireError> {
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated { at: b.len() });
        }
        let flags = be16(b, 2)?;
        if flags & (FLAG_QR | OPCODE_MASK) != 0 {
            return Err(WireError::Unsupported("not a standard query"));
        }
        if be16(b, 4)? != 1 || be16(b, 6)? != 0 || be16(b, 8)? != 0 {
            return Err(WireError::Unsupported("section counts"));
        }
        let arcount = be16(b, 10)?;
        if arcount > 1 {
            return Err(WireError::Unsupported("several additional records"));
        }
        let mut at = HEADER_LEN;
        loop {
            let len = *b.get(at).ok_or(WireError::Truncated { at })? as usize;
            if len == 0 {
                at += 1;
                break;
            }
            if len > 63 {
                // Compression pointers and reserved label types: the slow path decides.
                return Err(WireError::Unsupported("label type"));
            }
            at += 1 + len;
            if at - HEADER_LEN >= 255 {
                return Err(WireError::Unsupported("name too long"));
            }
        }
        let qname_len = at - HEADER_LEN;
        let qtype = be16(b, at)?;
        let qclass = be16(b, at + 2)?;
        let question_end = at + 4;
        let edns = if arcount == 1 {
            Some(parse_opt(b, question_end)?)
        } else if b.len() == question_end {
            None
        } else {
            return Err(WireError::Unsupported("trailing bytes"));
        };
        Ok(QueryView {
            id: be16(b, 0)?,
            flags,
            qname_len,
            qtype,
            qclass,
            question_end,
            edns,
        })
    }

    /// The question name as sent (wire form, case preserved).
    pub fn qname<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        b.get(HEADER_LEN..HEADER_LEN + self.qname_len)
            .unwrap_or_default()
    }

    /// The question section as sent.
    pub fn question<'a>(&self, b: &'a [u8]) -> &'a [u8] {
        b.get(HEADER_LEN..self.question_end).unwrap_or_default()
    }

    /// DO bit.
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// CD bit.
    pub fn checking_disabled(&self) -> bool {
        self.flags & FLAG_CD != 0
    }

    /// Largest answer this client accepts over UDP.
    pub fn max_udp_answer(&self) -> usize {
        self.edns.map_or(PLAIN_UDP_SIZE, |e| {
            usize::from(e.udp_size).max(PLAIN_UDP_SIZE)
        })
    }
}

/// The OPT record at `at`, which must end the message.
fn parse_opt(b: &[u8], at: usize) -> Result<EdnsInfo, WireError> {
    if *b.get(at).ok_or(WireError::Truncated { at })? != 0 {
        return Err(WireError::Unsupported("OPT owner is not the root"));
    }
    if be16(b, at + 1)? != TYPE_OPT {
        return Err(WireError::Unsupported("additional record is not OPT"));
    }
    let udp_size = be16(b, at + 3)?;
    let ttl = be32(b, at + 5)?;
    let version = (ttl >> 16) as u8;
    if version != 0 || (ttl >> 24) != 0 {
        return Err(WireError::Unsupported("EDNS version or extended rcode"));
    }
    let rdlen = be16(b, at + 9)? as usize;
    let mut opt = at + 11;
    let end = opt + rdlen;
    if end != b.len() {
        return Err(WireError::Unsupported("OPT length"));
    }
    while opt < end {
        let code = be16(b, opt)?;
        let len = be16(b, opt + 2)? as usize;
        opt += 4 + len;
        if opt > end {
            return Err(WireError::Unsupported("OPT option length"));
        }
        if code == OPT_CLIENT_SUBNET {
            return Err(WireError::Unsupported("client subnet"));
        }
    }
    Ok(EdnsInfo {
        udp_size: udp_size.max(PLAIN_UDP_SIZE as u16),
        dnssec_ok: ttl & 0x8000 != 0,
    })
}

/// What to do with a message the fast path did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// Too short to answer, or a response: drop without a word (answering a response invites
    /// reflection loops).
    Drop,
    /// Not a standard query (NOTIFY, UPDATE, …): not ours to answer; relay to where it was sent.
    Foreign,
    /// Malformed: answer FORMERR.
    FormErr(String),
    /// A valid query in an unusual shape (compressed question, TSIG, Client Subnet, EDNS
    /// version ≠ 0, …): forward verbatim, do not cache.
    Unusual {
        /// The question name, for logs and rules.
        qname: String,
        /// Query type.
        qtype: u16,
    },
}

/// Decide what to do with a message that [`QueryView::parse`] refused, using hickory-proto's
/// full parser as the judge of validity.
pub fn classify(b: &[u8]) -> Classified {
    if b.len() < HEADER_LEN {
        return Classified::Drop;
    }
    let flags = get16(b, 2);
    if flags & FLAG_QR != 0 {
        return Classified::Drop;
    }
    if flags & OPCODE_MASK != 0 {
        return Classified::Foreign;
    }
    match Message::from_vec(b) {
        Err(e) => Classified::FormErr(e.to_string()),
        Ok(m) if m.queries.len() != 1 => {
            Classified::FormErr(format!("{} questions", m.queries.len()))
        }
        Ok(m) if !m.answers.is_empty() || !m.authorities.is_empty() => {
            Classified::FormErr("a query with answer or authority records".into())
        }
        Ok(m) => {
            let q = &m.queries[0];
            Classified::Unusual {
                qname: q.name().to_ascii(),
                qtype: u16::from(q.query_type()),
            }
        }
    }
}

/// The name at `at` in `msg`, in presentation form (for logs and rules).
pub fn name_text(msg: &[u8], at: usize) -> String {
    let mut d = BinDecoder::new(msg);
    if d.read_slice(at).is_err() {
        return String::from("?");
    }
    match Name::read(&mut d) {
        Ok(n) => n.to_ascii(),
        Err(_) => String::from("?"),
    }
}

/// A lower-cased copy of a wire-form name, appended to `out`.
pub fn push_lowercase(out: &mut Vec<u8>, name: &[u8]) {
    out.extend(name.iter().map(u8::to_ascii_lowercase));
}

/// An error response to a query that may be malformed: the query's ID, opcode and RD, no
/// sections. `None` when there is not even a header to answer.
pub fn bare_error(query: &[u8], code: u8) -> Option<Vec<u8>> {
    if query.len() < HEADER_LEN {
        return None;
    }
    let flags = get16(query, 2);
    let mut out = vec![0u8; HEADER_LEN];
    out[0..2].copy_from_slice(&query[0..2]);
    let flags = FLAG_QR | (flags & (OPCODE_MASK | FLAG_RD)) | FLAG_RA | u16::from(code);
    put16(&mut out, 2, flags);
    Some(out)
}

/// Append an OPT record (our UDP size, the client's DO bit, no options).
fn push_opt(out: &mut Vec<u8>, dnssec_ok: bool) {
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    out.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
    out.extend_from_slice(&[0, 0]);
}

/// A response to a well-formed query: header, the question echoed, optional records built by
/// `answers` (which returns how many it appended), and an OPT if the client sent one.
pub fn reply(
    query: &[u8],
    q: &QueryView,
    code: u8,
    answers: impl FnOnce(&mut Vec<u8>) -> u16,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(q.question_end + 64);
    out.extend_from_slice(query.get(..q.question_end).unwrap_or_default());
    let flags = FLAG_QR | (q.flags & (FLAG_RD | FLAG_CD)) | FLAG_RA | u16::from(code);
    put16(&mut out, 2, flags);
    let ancount = answers(&mut out);
    put16(&mut out, 6, ancount);
    put16(&mut out, 8, 0);
    if let Some(e) = q.edns {
        push_opt(&mut out, e.dnssec_ok);
        put16(&mut out, 10, 1);
    } else {
        put16(&mut out, 10, 0);
    }
    out
}

/// A TC=1 reply with the question only: the client retries over TCP.
pub fn truncated(query: &[u8], q: &QueryView, flags_from_answer: u16) -> Vec<u8> {
    let mut out = reply(query, q, (flags_from_answer & RCODE_MASK) as u8, |_| 0);
    let flags = get16(&out, 2) | FLAG_TC | (flags_from_answer & FLAG_AD);
    put16(&mut out, 2, flags);
    out
}

/// Append one answer record for the question name (a compression pointer to offset 12).
pub fn push_answer(out: &mut Vec<u8>, qtype: u16, qclass: u16, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(&[0xc0, 0x0c]);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&qclass.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(rdata);
}

/// Build the query we send upstream for a cacheable question: a fresh header (ID filled in by
/// the exchange), RD and the client's CD, AD so that the upstream reports validation (RFC
/// 6840), the client's question, and our own OPT carrying the client's DO bit. The client's
/// EDNS options (cookies above all) are hop-by-hop and are not forwarded.
pub fn upstream_query(question: &[u8], checking_disabled: bool, dnssec_ok: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + question.len() + 11);
    let mut flags = FLAG_RD | FLAG_AD;
    if checking_disabled {
        flags |= FLAG_CD;
    }
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
    out.extend_from_slice(question);
    push_opt(&mut out, dnssec_ok);
    out
}

/// Whether `reply` answers `query`: same ID, QR set, same opcode, one question equal to the
/// query's (names compared case-insensitively).
pub fn answers_query(query: &[u8], reply: &[u8]) -> bool {
    if reply.len() < HEADER_LEN || query.len() < HEADER_LEN || reply[0..2] != query[0..2] {
        return false;
    }
    let (qf, rf) = (get16(query, 2), get16(reply, 2));
    if rf & FLAG_QR == 0 || (qf & OPCODE_MASK) != (rf & OPCODE_MASK) {
        return false;
    }
    if get16(reply, 4) != 1 || get16(query, 4) != 1 {
        // FORMERR and NOTIMP replies may omit the question; nothing else may.
        return get16(reply, 4) == 0 && matches!((rf & RCODE_MASK) as u8, 1 | 4);
    }
    let Some(qlen) = question_len(query) else {
        return false;
    };
    match (
        query.get(HEADER_LEN..HEADER_LEN + qlen),
        reply.get(HEADER_LEN..HEADER_LEN + qlen),
    ) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    }
}

/// Length of an uncompressed question (name, type, class) starting at 12.
fn question_len(b: &[u8]) -> Option<usize> {
    let mut at = HEADER_LEN;
    loop {
        let len = *b.get(at)? as usize;
        if len == 0 {
            return Some(at + 1 + 4 - HEADER_LEN).filter(|_| b.len() >= at + 5);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
}

/// Where an upstream answer keeps what the cache patches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerLayout {
    /// Header RCODE.
    pub rcode: u8,
    /// Header flags.
    pub flags: u16,
    /// Length of the question name (for echoing the client's spelling).
    pub qname_len: usize,
    /// Records in the answer section.
    pub answers: u16,
    /// Offset of every record's TTL field, OPT excluded.
    pub ttl_offsets: Vec<u16>,
    /// Byte range of the OPT record, if any.
    pub opt: Option<(u16, u16)>,
    /// `min(SOA TTL, SOA MINIMUM)` of the first SOA in the authority section (RFC 2308).
    pub negative_ttl: Option<u32>,
    /// Smallest TTL of any record, OPT excluded.
    pub min_ttl: Option<u32>,
    /// End of the last record; bytes after it are not kept.
    pub end: usize,
}

/// Walk an upstream answer with hickory-proto's decoder, recording what the cache needs.
/// Fails on anything structurally wrong (bad names, records running past the end).
pub fn scan_answer(b: &[u8]) -> Result<AnswerLayout, WireError> {
    if b.len() > usize::from(u16::MAX) {
        return Err(WireError::Unsupported("answer larger than 64 KiB"));
    }
    let bad =
        |e: hickory_proto::serialize::binary::DecodeError| WireError::Malformed(e.to_string());
    let flags = be16(b, 2)?;
    let counts = [be16(b, 4)?, be16(b, 6)?, be16(b, 8)?, be16(b, 10)?];
    if counts[0] != 1 {
        return Err(WireError::Unsupported(
            "answer without exactly one question",
        ));
    }
    let mut d = BinDecoder::new(b);
    d.read_slice(HEADER_LEN).map_err(bad)?;
    Name::read(&mut d).map_err(bad)?;
    let qname_len = d.index() - HEADER_LEN;
    d.read_slice(4).map_err(bad)?;
    let mut layout = AnswerLayout {
        rcode: (flags & RCODE_MASK) as u8,
        flags,
        qname_len,
        answers: counts[1],
        ..AnswerLayout::default()
    };
    for (section, &count) in counts.iter().enumerate().skip(1) {
        for _ in 0..count {
            let start = d.index();
            Name::read(&mut d).map_err(bad)?;
            let rtype = d.read_u16().map_err(bad)?.unverified();
            d.read_u16().map_err(bad)?;
            let ttl_at = d.index();
            let ttl = d.read_u32().map_err(bad)?.unverified();
            let rdlen = d.read_u16().map_err(bad)?.unverified();
            let rdata_at = d.index();
            d.read_slice(usize::from(rdlen)).map_err(bad)?;
            if rtype == TYPE_OPT {
                if section != 3 || layout.opt.is_some() {
                    return Err(WireError::Malformed("misplaced or duplicate OPT".into()));
                }
                layout.opt = Some((start as u16, d.index() as u16));
                continue;
            }
            // A TTL with the top bit set is treated as zero (RFC 2181 §8).
            let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
            layout.ttl_offsets.push(ttl_at as u16);
            layout.min_ttl = Some(layout.min_ttl.map_or(ttl, |m| m.min(ttl)));
            if rtype == TYPE_SOA && section == 2 && layout.negative_ttl.is_none() {
                let mut r = BinDecoder::new(b);
                r.read_slice(rdata_at).map_err(bad)?;
                Name::read(&mut r).map_err(bad)?;
                Name::read(&mut r).map_err(bad)?;
                r.read_slice(16).map_err(bad)?;
                let minimum = r.read_u32().map_err(bad)?.unverified();
                if r.index() > d.index() {
                    return Err(WireError::Malformed("SOA runs past its record".into()));
                }
                layout.negative_ttl = Some(ttl.min(minimum));
            }
        }
    }
    layout.end = d.index();
    Ok(layout)
}

/// Rewrite every TTL at `offsets` with `f(old)`.
pub fn patch_ttls(b: &mut [u8], offsets: &[u16], f: impl Fn(u32) -> u32) {
    for &off in offsets {
        let at = usize::from(off);
        if let Some(s) = b.get_mut(at..at + 4) {
            let old = u32::from_be_bytes([s[0], s[1], s[2], s[3]]);
            s.copy_from_slice(&f(old).to_be_bytes());
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
