//! Reading a ClientHello as it passes: SNI and ALPN, then the kernel's SNI policy (`policy`).
//!
//! Positions are counted from the first byte of the TLS record (the byte after the client's
//! SYN), so a ClientHello that spans TCP segments is read on: a segment is used only if it holds
//! the next thing to read (the record's start, or the next extension header), which an
//! out-of-order or repeated segment does not. Every read is bounded by the current segment;
//! anything that straddles a segment boundary — a length field, the server-name extension —
//! stops the reading with [`HELLO_SPLIT_PARTIAL`] instead of guessing. Each segment that was
//! read sends one hello event with what it found; the daemon puts the events of a flow together.
//!
//! Bounds: at most [`MAX_EXTENSIONS`] extension headers per segment, a name of at most
//! [`SNI_MAX`] bytes (one backwards pass, then lookups of the name and of its last
//! [`MAX_SUFFIXES`] dot suffixes), an ALPN list cut at [`ALPN_MAX`] - 1 bytes. Copies into the
//! event use power-of-two chunks whose offsets are computed from the length
//! (`packet::copy_chunks`), so the verifier sees constant sizes and bounded offsets.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use velocache_common::{
    IPPROTO_TCP, PortKey, Service, Verdict, counter_index,
    tls::{
        ALPN_MAX, EVENT_HELLO, HELLO_AWAIT, HELLO_CONTINUE, HELLO_DONE, HELLO_MALFORMED,
        HELLO_NOT_TLS, HELLO_PARSED, HELLO_PENDING, HELLO_SPLIT, HELLO_SPLIT_PARTIAL,
        HELLO_UNSUPPORTED, NO_RULE, ObservedFlow, SNI_DENY, SNI_MAX, SNI_PASS, TlsEvent,
        TlsFlowKey, UP_DENIED,
    },
};

use super::{
    maps::{TLS_EVENTS, TLS_FLOWS, TLS_SCRATCH},
    packet::{Tcp, copy_chunks, copy_right_aligned, parse_tcp},
    policy::{MAX_SUFFIXES, policy},
    sockets,
};
use crate::maps::{CONFIG, COUNTERS, SERVICE_PORTS};

/// Extension headers read per segment (browsers send about 20, GREASE included).
pub const MAX_EXTENSIONS: u32 = 48;
/// A ClientHello record is at most 16 KiB + 5 bytes: segments further in are not the hello.
const MAX_HELLO_SPAN: u32 = 1 << 15;

const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
/// Record header (5) + handshake header (4) + client_version (2) + random (32).
const SESSION_ID_AT: u32 = 43;

/// The reader's working space: the event being filled, and where in this segment the two
/// extensions it looks for were found.
#[repr(C)]
pub struct Scratch {
    /// The event sent at the end.
    pub ev: TlsEvent,
    /// Record-relative offset of the server-name extension's body; 0: not in this segment.
    sni_at: u32,
    sni_ext_len: u32,
    /// Record-relative offset of the ALPN extension's body; 0: not in this segment.
    alpn_at: u32,
    alpn_ext_len: u32,
    /// Where the walk stopped (`WALK_*`) and the offset of the next extension header.
    ///
    /// Results go through memory on purpose: the walk can stop in any of its iterations, each
    /// with other register ranges, and the verifier would check everything after the walk once
    /// per way out. Values read back from a map are plain unknowns, the same for every way out,
    /// so what follows is verified once.
    walk: u32,
    end_pos: u32,
    /// Dot suffixes of the name found by the policy's first pass (hash, length), shortest first.
    pub(super) suffixes: u32,
    pub(super) suffix_len: [u32; MAX_SUFFIXES as usize],
    pub(super) suffix_hash: [u64; MAX_SUFFIXES as usize],
}

/// The walk over the extensions went past the last one.
const WALK_COMPLETE: u32 = 0;
/// The next extension header is in a later segment.
const WALK_CONTINUE: u32 = 1;
/// An extension header straddles the end of this segment.
const WALK_STRADDLE: u32 = 2;
/// More extensions than [`MAX_EXTENSIONS`].
const WALK_TOO_MANY: u32 = 3;

/// The bytes of this segment, as record-relative offsets `[start, end)`, at `base` in the skb.
#[derive(Clone, Copy)]
struct Segment {
    base: u32,
    start: u32,
    end: u32,
}

impl Segment {
    /// `N` bytes at record offset `at`, if all of them are in this segment.
    #[inline(always)]
    fn read<const N: usize>(&self, ctx: &TcContext, at: u32) -> Option<[u8; N]> {
        if at < self.start || at > self.end || self.end - at < N as u32 {
            return None;
        }
        ctx.load::<[u8; N]>((self.base + (at - self.start)) as usize)
            .ok()
    }

    /// The skb offset of record offset `at` (which the caller checked is in this segment).
    #[inline(always)]
    fn skb_offset(&self, at: u32) -> u32 {
        self.base + (at - self.start)
    }

    /// Whether `[at, at + len)` lies in this segment.
    #[inline(always)]
    fn holds(&self, at: u32, len: u32) -> bool {
        at >= self.start && at <= self.end && self.end - at >= len
    }
}

/// The ClientHello reader, tail-called by the classifier for a data segment of an observed flow
/// whose hello is not read yet (the classifier has counted the packet's bytes). It re-derives
/// the flow from the packet, reads, and decides the packet's fate as the classifier would have:
/// counted as observed, or — SNI denied while the daemon is there — marked for a local reset.
#[classifier]
pub fn velocache_tls_hello(ctx: TcContext) -> i32 {
    let verdict = match try_hello(&ctx) {
        Some(true) => Verdict::DeniedSni,
        _ => Verdict::Observed,
    };
    if let Some(slot) = COUNTERS.get_ptr_mut(counter_index(Service::Https as u32, verdict)) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *slot += 1 };
    }
    TC_ACT_OK
}

/// `Some(true)`: the SNI is denied and the packet marked.
#[inline(always)]
fn try_hello(ctx: &TcContext) -> Option<bool> {
    let pkt = parse_tcp(ctx)?;
    let s = TLS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch (see `observe::ingress`).
    let key = unsafe {
        (*s).ev.head.key = pkt.key_up();
        &(*s).ev.head.key
    };
    let st = TLS_FLOWS.get_ptr_mut(key)?;
    if !read(ctx, st, key, &pkt.tcp) {
        return Some(false);
    }
    // SAFETY: maps values valid for this run, copied out at once.
    let entry =
        unsafe { *SERVICE_PORTS.get(PortKey::new(IPPROTO_TCP, u16::from_be(pkt.dport_be)))? };
    let listen_port = entry.listen_port as u16;
    let mark = CONFIG.get(0)?.mark;
    // The daemon must still be there for its policy to act (fail-open).
    if !sockets::daemon_listening_for(ctx, key, listen_port) {
        return Some(false);
    }
    // SAFETY: the flow's entry; `up_flags` is written by the LAN ingress programs only.
    unsafe { (*st).up_flags |= UP_DENIED };
    sockets::reset_by_listener(ctx, key, listen_port, mark);
    Some(true)
}

/// Read what this segment holds of the flow's ClientHello and send a hello event; returns
/// whether the kernel's SNI policy denies the flow. `st` is the flow's map entry, `key` its key
/// (in this CPU's scratch).
#[inline(always)]
fn read(ctx: &TcContext, st: *mut ObservedFlow, key: &TlsFlowKey, tcp: &Tcp) -> bool {
    let Some(s) = TLS_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: `st` and `s` are map value pointers valid for this run; `st`'s hello fields are
    // written by this program only, `s` is this CPU's own scratch.
    unsafe {
        let syn_seq = (*st).syn_seq;
        let start = tcp.seq.wrapping_sub(syn_seq.wrapping_add(1));
        if start > MAX_HELLO_SPAN {
            return false;
        }
        let seg = Segment {
            base: tcp.payload_off,
            start,
            end: start + tcp.payload_len,
        };
        (*s).sni_at = 0;
        (*s).alpn_at = 0;
        (*s).ev.sni_len = 0;
        (*s).ev.alpn_len = 0;
        (*s).ev.policy_rule = NO_RULE;
        (*s).ev.policy_action = SNI_PASS;

        let state = (*st).hello_state;
        let first = state == HELLO_AWAIT;
        let (pos, ext_end) = if first {
            if start != 0 {
                // Not the record's first bytes (a retransmission, or out of order).
                return false;
            }
            match header(ctx, &seg) {
                Ok(at) => at,
                Err(status) => {
                    (*st).hello_state = HELLO_DONE;
                    send(s, st, key, status);
                    return false;
                }
            }
        } else if state == HELLO_CONTINUE {
            let pos = (*st).hello_pos;
            if pos < seg.start || pos >= seg.end {
                return false;
            }
            (pos, (*st).hello_ext_end)
        } else {
            return false;
        };

        walk_extensions(ctx, &seg, s, pos, ext_end);
        let (walk, end_pos) = ((*s).walk, (*s).end_pos);
        let (mut status, mut next) = match walk {
            WALK_COMPLETE if end_pos != ext_end => (HELLO_MALFORMED, HELLO_DONE),
            // Whole in this segment only if the last extension's body is too.
            WALK_COMPLETE if first && end_pos <= seg.end => (HELLO_PARSED, HELLO_DONE),
            WALK_COMPLETE => (HELLO_SPLIT, HELLO_DONE),
            WALK_CONTINUE => (HELLO_PENDING, HELLO_CONTINUE),
            WALK_STRADDLE => (HELLO_SPLIT_PARTIAL, HELLO_DONE),
            _ => (HELLO_UNSUPPORTED, HELLO_DONE),
        };
        // A name or protocol list that cannot be read stops the reading; the walk's own
        // verdict on the extensions (malformed, unsupported) stays the one reported.
        let walked_ok = matches!(status, HELLO_PARSED | HELLO_SPLIT | HELLO_PENDING);
        if (*s).sni_at != 0
            && let Err(e) = server_name(ctx, &seg, s)
        {
            if walked_ok {
                status = e;
            }
            next = HELLO_DONE;
        }
        if (*s).alpn_at != 0 && !alpn(ctx, &seg, s) {
            if walked_ok && status != HELLO_MALFORMED {
                status = HELLO_SPLIT_PARTIAL;
            }
            next = HELLO_DONE;
        }
        (*st).hello_state = next;
        (*st).hello_pos = end_pos;
        (*st).hello_ext_end = ext_end;
        if (*s).ev.sni_len != 0 {
            policy(s);
        }
        send(s, st, key, status);
        (*s).ev.policy_action == SNI_DENY
    }
}

/// Check the record and handshake headers and skip to the extensions: `(offset of the first
/// extension header, offset of the extensions' end)`, or the status to report.
#[inline(always)]
fn header(ctx: &TcContext, seg: &Segment) -> Result<(u32, u32), u32> {
    // A first segment too short for the fixed part is a hello split early: nothing guessed.
    let Some(h) = seg.read::<11>(ctx, 0) else {
        return Err(HELLO_SPLIT_PARTIAL);
    };
    if h[0] != RECORD_HANDSHAKE || h[1] != 3 || h[5] != HANDSHAKE_CLIENT_HELLO {
        return Err(HELLO_NOT_TLS);
    }
    let record_len = u32::from(u16::from_be_bytes([h[3], h[4]]));
    let hello_len = u32::from_be_bytes([0, h[6], h[7], h[8]]);
    if hello_len + 4 > record_len {
        // The handshake message continues in another record: positions would shift by the
        // next record's header. Not followed.
        return Err(HELLO_UNSUPPORTED);
    }
    let hello_end = 9 + hello_len;
    let Some([sid_len]) = seg.read::<1>(ctx, SESSION_ID_AT) else {
        return Err(HELLO_SPLIT_PARTIAL);
    };
    if sid_len > 32 {
        return Err(HELLO_MALFORMED);
    }
    let at = SESSION_ID_AT + 1 + u32::from(sid_len);
    let Some(cs) = seg.read::<2>(ctx, at) else {
        return Err(HELLO_SPLIT_PARTIAL);
    };
    let at = at + 2 + u32::from(u16::from_be_bytes(cs));
    let Some([comp_len]) = seg.read::<1>(ctx, at) else {
        return Err(HELLO_SPLIT_PARTIAL);
    };
    let at = at + 1 + u32::from(comp_len);
    if at == hello_end {
        // No extensions at all (legal before TLS 1.3): read whole, no name.
        return Ok((at, at));
    }
    let Some(el) = seg.read::<2>(ctx, at) else {
        return Err(HELLO_SPLIT_PARTIAL);
    };
    let first_ext = at + 2;
    let ext_end = first_ext + u32::from(u16::from_be_bytes(el));
    if at > hello_end || ext_end > hello_end {
        return Err(HELLO_MALFORMED);
    }
    Ok((first_ext, ext_end))
}

/// Walk extension headers from `pos` while they are in this segment, noting where the server
/// name and ALPN extensions are, and where it stopped (`walk`, `end_pos` in the scratch).
#[inline(always)]
fn walk_extensions(ctx: &TcContext, seg: &Segment, s: *mut Scratch, mut pos: u32, ext_end: u32) {
    let mut walk = WALK_TOO_MANY;
    for _ in 0..MAX_EXTENSIONS {
        if pos >= ext_end {
            walk = WALK_COMPLETE;
            break;
        }
        if pos >= seg.end {
            walk = WALK_CONTINUE;
            break;
        }
        let Some(h) = seg.read::<4>(ctx, pos) else {
            walk = WALK_STRADDLE;
            break;
        };
        let ty = u16::from_be_bytes([h[0], h[1]]);
        let len = u32::from(u16::from_be_bytes([h[2], h[3]]));
        // Only memory is written here, never a register that lives on: every branch reaches
        // the next iteration in the same verifier state, so the walk costs one pass to verify.
        // SAFETY: `s` is this CPU's scratch.
        unsafe {
            if ty == EXT_SERVER_NAME {
                (*s).sni_at = pos + 4;
                (*s).sni_ext_len = len;
            } else if ty == EXT_ALPN {
                (*s).alpn_at = pos + 4;
                (*s).alpn_ext_len = len;
            }
        }
        pos += 4 + len;
    }
    // SAFETY: `s` is this CPU's scratch.
    unsafe {
        (*s).walk = walk;
        (*s).end_pos = pos;
    }
}

/// Copy the host name of the server-name extension (RFC 6066: a list holding one `host_name`)
/// into the event. `Err` carries the status to report when it cannot be read.
///
/// # Safety
/// `s` is this CPU's scratch.
#[inline(always)]
unsafe fn server_name(ctx: &TcContext, seg: &Segment, s: *mut Scratch) -> Result<(), u32> {
    let (at, ext_len) = unsafe { ((*s).sni_at, (*s).sni_ext_len) };
    if !seg.holds(at, ext_len) {
        return Err(HELLO_SPLIT_PARTIAL);
    }
    // list length (2), name type (1), name length (2).
    let Some(h) = seg.read::<5>(ctx, at) else {
        return Err(HELLO_MALFORMED);
    };
    let name_len = u32::from(u16::from_be_bytes([h[3], h[4]]));
    if h[2] != 0 || name_len == 0 || name_len > SNI_MAX as u32 || name_len + 5 > ext_len {
        return Err(HELLO_MALFORMED);
    }
    // SAFETY: the copy writes the last `name_len` (<= 255) bytes of the 256-byte `sni` array.
    let copied = unsafe {
        copy_right_aligned(
            ctx,
            seg.skb_offset(at + 5),
            name_len & 0xff,
            (*s).ev.sni.as_mut_ptr(),
        )
    };
    if !copied {
        return Err(HELLO_MALFORMED);
    }
    unsafe { (*s).ev.sni_len = name_len };
    Ok(())
}

/// Copy the ALPN protocol list (cut at `ALPN_MAX - 1` bytes) into the event; false if the
/// extension is not all in this segment.
///
/// # Safety
/// `s` is this CPU's scratch.
#[inline(always)]
unsafe fn alpn(ctx: &TcContext, seg: &Segment, s: *mut Scratch) -> bool {
    let (at, ext_len) = unsafe { ((*s).alpn_at, (*s).alpn_ext_len) };
    if !seg.holds(at, ext_len) || ext_len < 2 {
        return false;
    }
    let Some(l) = seg.read::<2>(ctx, at) else {
        return false;
    };
    let list_len = u32::from(u16::from_be_bytes(l)).min(ext_len - 2);
    let n = list_len.min(ALPN_MAX as u32 - 1) & (ALPN_MAX as u32 - 1);
    // SAFETY: at most 63 bytes into the 64-byte `alpn` array.
    if unsafe { copy_chunks(ctx, seg.skb_offset(at + 2), n, (*s).ev.alpn.as_mut_ptr()) } {
        unsafe { (*s).ev.alpn_len = n };
    }
    true
}

/// Send the hello event in the scratch with `status` and the flow's counters.
///
/// # Safety
/// `s` is this CPU's scratch, `st` the flow's entry.
#[inline(always)]
unsafe fn send(s: *mut Scratch, st: *const ObservedFlow, key: &TlsFlowKey, status: u32) {
    unsafe {
        (*s).ev.head.kind = EVENT_HELLO;
        (*s).ev.head.status = status;
        (*s).ev.head.key = *key;
        (*s).ev.head.flow = *st;
        // A full ring buffer loses the event; the flow is still counted and reported at its end.
        let _ = TLS_EVENTS.output::<TlsEvent>(&(*s).ev, 0);
    }
}
