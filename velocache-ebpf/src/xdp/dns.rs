//! DNS answers from the kernel: slot [`XdpSlot::Dns`] of the XDP dispatcher, on the LAN
//! interfaces.
//!
//! A UDP query to port 53 in the plain shape (one question, no compression, at most one OPT
//! record of version 0 without Client Subnet, at most 512 bytes) is copied into a per-CPU
//! scratch buffer, where its key is built (`velocache_common::dns`) and looked up in
//! `DNS_ANSWERS`, which only the daemon fills. On a fresh entry the answer is assembled in the
//! buffer — the query's header and question, the entry's sections after them, every TTL lowered
//! by the entry's age — and written over the frame, which is resized, turned around (MACs,
//! addresses, ports: the answer comes from the resolver the client asked) and sent back with
//! `XDP_TX` — or, on veth, redirected to the interface it came in on (`DNS_REDIRECT`). The UDP
//! checksum is computed over the new payload (`bpf_csum_diff`), the IPv4 header checksum from
//! scratch. Incoming checksums are not verified: Ethernet's FCS guards the link, and a veth
//! peer with checksum offload on hands over partial sums that would fail every check.
//!
//! Anything else — another shape, no entry, an entry past `fresh_until_ns`, a frame that
//! cannot grow — goes on unmodified through the dispatcher's `next()`, and the daemon answers
//! it as before. Nothing here decides what is cacheable.
use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, xdp_action::XDP_DROP, xdp_action::XDP_TX},
    helpers::{
        bpf_ktime_get_ns,
        generated::{
            bpf_csum_diff, bpf_redirect, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
            bpf_xdp_store_bytes,
        },
    },
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use velocache_common::{
    dns::{
        DNS_ANSWER_MAX, DNS_COUNTER_COUNT, DNS_MAX_ANSWERS, DNS_MAX_TTLS, DnsAnswer, DnsCounter,
        DnsKey, FLAG_CD, KEY_CD, KEY_DO, KEY_EDNS, aged, answer_flags, fold, lower_word,
    },
    xdp::{MAX_XDP_INTERFACES, XdpSlot},
};

use super::rtp::packet::{ETH_HLEN, IPPROTO_UDP, UDP_HLEN, read};
use crate::dispatch::next;

/// Hot answers, filled by the daemon. Allocated as used: most gateways hold a few hundred.
#[map]
pub static DNS_ANSWERS: HashMap<DnsKey, DnsAnswer> =
    HashMap::with_max_entries(DNS_MAX_ANSWERS, BPF_F_NO_PREALLOC);

/// Per-CPU counters, indexed by [`DnsCounter`].
#[map]
pub static DNS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DNS_COUNTER_COUNT, 0);

/// Interfaces (ifindex → 1) whose answers leave by `bpf_redirect` to the interface itself
/// rather than `XDP_TX`: veth, where `XDP_TX` only reaches a peer that runs an XDP program of
/// its own (the kernel skips waking a peer without one, and the answer waits for the next
/// packet), while a redirect is flushed to any peer with GRO on. Filled by the daemon.
#[map]
pub static DNS_REDIRECT: HashMap<u32, u32> = HashMap::with_max_entries(MAX_XDP_INTERFACES, 0);

/// Bytes of the scratch buffer: a 512-byte message plus the widest masked offset arithmetic
/// below (`& 0x3ff` reads of up to 8 bytes).
const BUF: usize = 1024 + 8;

/// The per-CPU work area: the key being looked up and the message being read and rewritten.
/// Too big for the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    key: DnsKey,
    buf: [u8; BUF],
    /// The answer's Ethernet and IP headers.
    hdr: [u8; 64],
    /// The answer's UDP header.
    udp: [u8; 8],
    /// Values passed through memory to keep the verifier's state count flat (see `stash`).
    meta: [u64; 4],
}

/// Store `v` where the verifier cannot follow it; [`unstash`] reads it back as an unknown value.
#[inline(always)]
fn stash(slot: &mut u64, v: u64) {
    // SAFETY: a plain store into the scratch entry; volatile so it is not kept in a register.
    unsafe { core::ptr::write_volatile(slot, v) }
}

#[inline(always)]
fn unstash(slot: &u64) -> u64 {
    // SAFETY: a plain load from the scratch entry (see `stash`).
    unsafe { core::ptr::read_volatile(slot) }
}

#[inline(always)]
fn unstash16(slot: &u16) -> u16 {
    // SAFETY: a plain load from a map value.
    unsafe { core::ptr::read_volatile(slot) }
}

#[map]
static DNS_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const DNS_PORT: u16 = 53;
const HEADER: usize = 12;
const TYPE_OPT: u16 = 41;
const OPT_CLIENT_SUBNET: u16 = 8;
const NS_PER_SEC: u64 = 1_000_000_000;
const HOP_LIMIT: u8 = 64;

#[xdp]
pub fn velocache_dns(ctx: XdpContext) -> u32 {
    match try_answer(&ctx) {
        Some(action) => action,
        None => next(&ctx, XdpSlot::Dns),
    }
}

#[inline(always)]
fn count(c: DnsCounter) {
    if let Some(n) = DNS_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: this CPU's own slot; no other program touches it concurrently.
        unsafe { *n += 1 };
    }
}

/// Words of the key's name ([`DnsKey::name`] is 256 bytes).
const NAME_WORDS: usize = 32;

/// Byte `i` of the buffer; the mask keeps every index provably inside it.
#[inline(always)]
fn at(buf: &[u8; BUF], i: usize) -> u8 {
    buf[i & 0x3ff]
}

#[inline(always)]
fn be16(buf: &[u8; BUF], i: usize) -> u16 {
    ((at(buf, i) as u16) << 8) | at(buf, i + 1) as u16
}

#[inline(always)]
fn put16(buf: &mut [u8; BUF], i: usize, v: u16) {
    buf[i & 0x3ff] = (v >> 8) as u8;
    buf[(i + 1) & 0x3ff] = v as u8;
}

/// A one's-complement sum of `bytes` (even length) as 16-bit words in memory order: the
/// domain `bpf_csum_diff` sums in, so the two add up.
#[inline(always)]
fn sum_words(bytes: &[u8], words: usize) -> u64 {
    let mut s = 0u64;
    for i in 0..words {
        if 2 * i + 1 < bytes.len() {
            s += u16::from_ne_bytes([bytes[2 * i], bytes[2 * i + 1]]) as u64;
        }
    }
    s
}

#[inline(always)]
fn sum_bytes(bytes: &[u8; 4]) -> u64 {
    sum_words(bytes, 2)
}

#[inline(always)]
fn sum_slice8(bytes: &[u8]) -> u64 {
    sum_words(bytes, 4)
}

#[inline(always)]
fn sum_slice20(bytes: &[u8]) -> u64 {
    sum_words(bytes, 10)
}

#[inline(always)]
fn sum_slice32(bytes: &[u8]) -> u64 {
    sum_words(bytes, 16)
}

/// Where the frame's UDP header starts and the resolver it was sent to (IPv4 mapped).
struct L3 {
    l4: usize,
    v6: bool,
    resolver: [u8; 16],
}

#[inline(always)]
fn parse_l3(ctx: &XdpContext) -> Option<L3> {
    let mut resolver = [0u8; 16];
    match u16::from_be(read::<u16>(ctx, 12)?) {
        ETH_P_IP => {
            // Options are rare on queries and would move everything below: the stack takes them.
            if read::<u8>(ctx, ETH_HLEN)? != 0x45 {
                return None;
            }
            if u16::from_be(read::<u16>(ctx, ETH_HLEN + 6)?) & 0x3fff != 0 {
                return None;
            }
            if read::<u8>(ctx, ETH_HLEN + 9)? != IPPROTO_UDP {
                return None;
            }
            let dst: [u8; 4] = read(ctx, ETH_HLEN + 16)?;
            resolver[10] = 0xff;
            resolver[11] = 0xff;
            resolver[12..].copy_from_slice(&dst);
            Some(L3 {
                l4: ETH_HLEN + 20,
                v6: false,
                resolver,
            })
        }
        ETH_P_IPV6 => {
            // Extension headers: the stack takes them.
            if read::<u8>(ctx, ETH_HLEN + 6)? != IPPROTO_UDP {
                return None;
            }
            resolver = read(ctx, ETH_HLEN + 24)?;
            Some(L3 {
                l4: ETH_HLEN + 40,
                v6: true,
                resolver,
            })
        }
        _ => None,
    }
}

#[inline(always)]
fn try_answer(ctx: &XdpContext) -> Option<u32> {
    let l3 = parse_l3(ctx)?;
    let l4 = l3.l4;
    if u16::from_be(read::<u16>(ctx, l4 + 2)?) != DNS_PORT {
        return None;
    }
    let udp_len = u16::from_be(read::<u16>(ctx, l4 + 4)?) as usize;
    #[expect(
        clippy::manual_range_contains,
        reason = "`contains` compiles to one wrapping subtraction the verifier cannot bound"
    )]
    let outside = udp_len < UDP_HLEN + HEADER + 5 || udp_len > UDP_HLEN + 512;
    if outside {
        return None;
    }
    let n = udp_len - UDP_HLEN;
    if ctx.data() + l4 + udp_len > ctx.data_end() {
        return None;
    }
    let scratch = DNS_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch entry, used by this program run only.
    let scratch = unsafe { &mut *scratch };
    let buf = &mut scratch.buf;
    // SAFETY: `n` is in 17..=512 and `buf` holds 1032 bytes.
    if unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (l4 + UDP_HLEN) as u32,
            buf.as_mut_ptr().cast(),
            // Not masked: the verifier needs the lower bound (17) it knows from the check above.
            n as u32,
        )
    } != 0
    {
        return None;
    }

    // Header: a standard query, one question, nothing else but an optional OPT.
    let qflags = be16(buf, 2);
    if qflags & 0xf800 != 0 || be16(buf, 4) != 1 || be16(buf, 6) != 0 || be16(buf, 8) != 0 {
        return None;
    }
    let arcount = be16(buf, 10);
    if arcount > 1 {
        return None;
    }

    // The name: labels up to the root, no compression pointers (a query has no earlier name
    // to point at; the daemon's slow path handles the odd client that does it anyway).
    //
    // Each loop below leaves its result in the scratch area and the code after it reads it
    // back: a value loaded from a map carries no history, so the verifier sees one state after
    // the loop however many iterations ran, instead of checking the rest of the program once
    // per exit (which exceeds its one-million-instruction budget).
    let mut pos = HEADER;
    let mut end = 0;
    for _ in 0..128 {
        let label = at(buf, pos) as usize;
        if label == 0 {
            end = pos + 1;
            break;
        }
        if label > 63 {
            return None;
        }
        pos += label + 1;
        if pos >= HEADER + 255 || pos >= n {
            return None;
        }
    }
    stash(&mut scratch.meta[0], end as u64);
    let end = unstash(&scratch.meta[0]) as usize;
    if end <= HEADER || end > HEADER + 255 || end + 4 > n {
        return None;
    }
    let name_len = end - HEADER;
    let qend = end + 4;

    let mut kflags = 0u16;
    let mut dnssec_ok = false;
    if arcount == 1 {
        let o = qend;
        if o + 11 > n || at(buf, o) != 0 || be16(buf, o + 1) != TYPE_OPT {
            return None;
        }
        // Extended RCODE and version must be 0 (the daemon forwards the rest verbatim).
        if at(buf, o + 5) != 0 || at(buf, o + 6) != 0 {
            return None;
        }
        dnssec_ok = at(buf, o + 7) & 0x80 != 0;
        let rdlen = be16(buf, o + 9) as usize;
        if o + 11 + rdlen != n {
            return None;
        }
        let mut p = o + 11;
        for _ in 0..16 {
            if p >= n {
                break;
            }
            if p + 4 > n || be16(buf, p) == OPT_CLIENT_SUBNET {
                return None;
            }
            p += 4 + be16(buf, p + 2) as usize;
        }
        stash(&mut scratch.meta[1], u64::from(p == n));
        if unstash(&scratch.meta[1]) != 1 {
            return None;
        }
        kflags |= KEY_EDNS;
        if dnssec_ok {
            kflags |= KEY_DO;
        }
    } else if qend != n {
        return None;
    }
    if qflags & FLAG_CD != 0 {
        kflags |= KEY_CD;
    }

    let key = &mut scratch.key;
    key.resolver = l3.resolver;
    key.qtype = be16(buf, end);
    key.qclass = be16(buf, end + 2);
    key.flags = kflags;
    key.name_len = name_len as u16;
    // Eight bytes at a time: lower-cased as a word, the bytes past the name's end masked to
    // zero. The name's end is read afresh for every word: the comparison narrows only a value
    // that dies at once, so the verifier's states merge again after each word (see `stash`).
    let meta = &scratch.meta;
    for j in 0..NAME_WORDS {
        let start = HEADER + 8 * j;
        let left = (unstash(&meta[0]) as usize).saturating_sub(start);
        let mask = if left >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * left)) - 1
        };
        // SAFETY: `start + 8` ≤ 12 + 256 bytes of the 1032-byte buffer; word `j` of the key's
        // 256-byte name.
        unsafe {
            let word = (buf.as_ptr().add(start) as *const u64).read_unaligned();
            (key.name.as_mut_ptr().add(8 * j) as *mut u64).write_unaligned(lower_word(word) & mask);
        }
    }
    stash(&mut scratch.meta[2], qend as u64);
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "by value the 280-byte key would be copied onto the 512-byte BPF stack"
    )]
    let entry = DNS_ANSWERS.get_ptr_mut(&scratch.key)?;
    // SAFETY: map values stay valid for this program run (RCU).
    let entry = unsafe { &mut *entry };
    let now = unsafe { bpf_ktime_get_ns() };
    if now >= entry.fresh_until_ns {
        count(DnsCounter::Expired);
        return None;
    }
    let age = now.saturating_sub(entry.stored_ns) / NS_PER_SEC;
    let qend = unstash(&scratch.meta[2]) as usize;
    let tail_len = entry.len as usize;
    if qend > HEADER + 255 + 4 || tail_len > DNS_ANSWER_MAX {
        return None;
    }
    let total = qend + tail_len;
    if total > DNS_ANSWER_MAX {
        return None;
    }
    let buf = &mut scratch.buf;

    // The answer, in the buffer: the query's ID and question stay where they are.
    put16(
        buf,
        2,
        answer_flags(entry.flags, entry.ad != 0, qflags, dnssec_ok),
    );
    put16(buf, 6, entry.counts[0]);
    put16(buf, 8, entry.counts[1]);
    put16(buf, 10, entry.counts[2]);
    // The whole 512-byte tail, whatever its length: a fixed loop the verifier walks once.
    // Bytes past `total` are never sent.
    let base = qend & 0x1ff;
    for i in 0..64 {
        // SAFETY: `i < 64` keeps the source inside the 512-byte tail; `base + 8 * i + 8` is at
        // most 511 + 512 bytes into the 1032-byte buffer.
        unsafe {
            let v = (entry.tail.as_ptr() as *const u64).add(i).read_unaligned();
            (buf.as_mut_ptr().add(base + i * 8) as *mut u64).write_unaligned(v);
        }
    }
    for i in 0..DNS_MAX_TTLS {
        // Read afresh each time (see `stash`): the count narrowed by this test does not live on.
        if i >= unstash16(&entry.ttl_count) as usize {
            break;
        }
        let off = (base + entry.ttl_offsets[i] as usize) & 0x3ff;
        let ttl = u32::from_be_bytes([
            buf[off],
            buf[(off + 1) & 0x3ff],
            buf[(off + 2) & 0x3ff],
            buf[(off + 3) & 0x3ff],
        ]);
        let ttl = aged(ttl, age).to_be_bytes();
        buf[off] = ttl[0];
        buf[(off + 1) & 0x3ff] = ttl[1];
        buf[(off + 2) & 0x3ff] = ttl[2];
        buf[(off + 3) & 0x3ff] = ttl[3];
    }
    stash(&mut scratch.meta[3], total as u64);
    let total = unstash(&scratch.meta[3]) as usize;
    if !(HEADER + 5..=DNS_ANSWER_MAX).contains(&total) {
        return None;
    }
    let buf = &mut scratch.buf;
    for i in 0..4 {
        buf[(total + i) & 0x3ff] = 0;
    }
    let padded = (total + 3) & !3;
    // SAFETY: `padded` ≤ 508 bytes of the buffer; `from` is empty.
    let payload_sum = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            buf.as_mut_ptr().cast(),
            (padded & 0x3ff) as u32,
            0,
        )
    };
    if payload_sum < 0 {
        return None;
    }

    // Everything the rewrite needs is read before the frame changes size, and the new headers
    // are built in the scratch area (the BPF stack is too small for them and the key's loops).
    let ports: [u8; 4] = read(ctx, l4)?;
    let new_udp_len = (UDP_HLEN + total) as u16;
    let mut sum = (payload_sum as u64 & 0xffff_ffff)
        + u16::from_ne_bytes(new_udp_len.to_be_bytes()) as u64 * 2
        + u16::from_ne_bytes([0, IPPROTO_UDP]) as u64
        + sum_bytes(&ports);
    let hdr = &mut scratch.hdr;
    // Ethernet: the MACs swapped, the EtherType kept.
    let eth: [u8; ETH_HLEN] = read(ctx, 0)?;
    hdr[..6].copy_from_slice(&eth[6..12]);
    hdr[6..12].copy_from_slice(&eth[..6]);
    hdr[12..14].copy_from_slice(&eth[12..14]);
    let ip = &mut hdr[ETH_HLEN..ETH_HLEN + 40];
    if l3.v6 {
        let orig: [u8; 40] = read(ctx, ETH_HLEN)?;
        ip.copy_from_slice(&orig);
        sum += sum_slice32(&orig[8..40]);
        ip[4..6].copy_from_slice(&new_udp_len.to_be_bytes());
        ip[7] = HOP_LIMIT;
        ip[8..24].copy_from_slice(&orig[24..40]);
        ip[24..40].copy_from_slice(&orig[8..24]);
    } else {
        let orig: [u8; 20] = read(ctx, ETH_HLEN)?;
        ip[..20].copy_from_slice(&orig);
        sum += sum_slice8(&orig[12..20]);
        ip[2..4].copy_from_slice(&(20 + new_udp_len).to_be_bytes());
        ip[8] = HOP_LIMIT;
        ip[10] = 0;
        ip[11] = 0;
        ip[12..16].copy_from_slice(&orig[16..20]);
        ip[16..20].copy_from_slice(&orig[12..16]);
        let check = !fold(sum_slice20(&ip[..20]));
        ip[10..12].copy_from_slice(&check.to_ne_bytes());
    }
    let mut udp_check = !fold(sum);
    if udp_check == 0 {
        udp_check = 0xffff;
    }
    let udp = &mut scratch.udp;
    udp[0..2].copy_from_slice(&ports[2..4]);
    udp[2..4].copy_from_slice(&ports[0..2]);
    udp[4..6].copy_from_slice(&new_udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&udp_check.to_ne_bytes());

    let have = (ctx.data_end() - ctx.data()) as i64;
    let want = (l4 + UDP_HLEN + total) as i64;
    // SAFETY: resizing the frame the program was given; pointers are re-derived after it.
    if want != have && unsafe { bpf_xdp_adjust_tail(ctx.ctx, (want - have) as i32) } != 0 {
        count(DnsCounter::Failed);
        return None;
    }
    // From here the frame is ours: a failure drops it (the client retries) rather than pass a
    // half-written message to the stack.
    // SAFETY: `total` ≤ 508 bytes of the buffer, and the frame was just sized to hold them.
    if unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            (l4 + UDP_HLEN) as u32,
            buf.as_mut_ptr().cast(),
            total as u32,
        )
    } != 0
    {
        count(DnsCounter::Failed);
        return Some(XDP_DROP);
    }
    let ip_len = if l3.v6 { 40 } else { 20 };
    // SAFETY: the headers lie before the payload just written, inside the frame's first
    // `l4 + 8` bytes, which the resize kept; `hdr`/`udp` are in the scratch entry.
    let written = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            0,
            scratch.hdr.as_mut_ptr().cast(),
            (ETH_HLEN + ip_len) as u32,
        ) == 0
            && bpf_xdp_store_bytes(ctx.ctx, l4 as u32, scratch.udp.as_mut_ptr().cast(), 8) == 0
    };
    if !written {
        count(DnsCounter::Failed);
        return Some(XDP_DROP);
    }
    // SAFETY: an aligned u64 inside the map value, which outlives this run; other CPUs add to
    // it at the same time, hence the atomic.
    // (`AtomicU64` has no read-modify-write on the BPF target; the intrinsic lowers to the
    // BPF atomic add.)
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            &mut entry.hits,
            1,
        )
    };
    count(DnsCounter::Answered);
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: a plain `u32` value, read at once.
    if unsafe { DNS_REDIRECT.get(ifindex) }.is_some() {
        // SAFETY: a helper call on the frame's own interface.
        return Some(unsafe { bpf_redirect(ifindex, 0) } as u32);
    }
    Some(XDP_TX)
}
