//! Fragments follow their first fragment.
//!
//! Only the first fragment of a datagram carries ports, so only it can be classified. When it is
//! steered, its decision and ports go into `FRAGMENTS` under the datagram's identity (addresses,
//! IP ID, protocol), and every later fragment looks them up and is steered the same way; the
//! gateway's stack then reassembles the datagram and (reassembly drops the assigned socket) its
//! UDP lookup asks the `sk_lookup` program, which `remember_steered` prepared.
//!
//! Fragments can arrive out of order. A later fragment with no entry is forwarded — no port, no
//! way to know better — and leaves a "forwarded" entry; a first fragment that then finds it is
//! forwarded too, so the datagram stays whole at its destination (not intercepted, but not lost).
//! Entries older than the reassembly timeout are ignored: IPv4's 16-bit IDs wrap.
use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::TcContext};
use velocache_common::{
    ClassifierConfig, ServiceEntry, Verdict,
    steer::{FRAG_FORWARDED, FRAG_STEERED, FragKey, FragValue, STEERED_TTL_NS},
};

use crate::{
    ingress::steer_flow,
    maps::FRAGMENTS,
    parse::{Addrs, Flow, LaterFragment},
    sockets::remember_steered,
};

#[inline(always)]
fn key(addrs: &Addrs, proto: u8, id: u32) -> FragKey {
    FragKey {
        src: addrs.src,
        dst: addrs.dst,
        id,
        family: addrs.family(),
        proto,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The fresh entry for this datagram, if any.
#[inline(always)]
fn entry(key: &FragKey) -> Option<FragValue> {
    // SAFETY: a map lookup result stays valid for the program's run (RCU); copied out at once.
    let value = unsafe { *FRAGMENTS.get(key)? };
    (now().wrapping_sub(value.stamp_ns) < STEERED_TTL_NS).then_some(value)
}

/// A first fragment: were later fragments of its datagram already forwarded?
#[inline(always)]
pub fn forwarded_ahead(flow: &Flow, id: u32) -> bool {
    entry(&key(&flow.addrs, flow.proto, id)).is_some_and(|v| v.decision == FRAG_FORWARDED)
}

/// A first fragment was steered to `service`: later fragments follow, and the reassembled
/// datagram's lookup finds the daemon's socket.
#[inline(always)]
pub fn remember_first(flow: &Flow, id: u32, service: u32, listen_port: u32) {
    let value = FragValue {
        decision: FRAG_STEERED,
        service,
        sport_be: flow.sport_be,
        dport_be: flow.dport_be,
        listen_port,
        stamp_ns: now(),
    };
    let _ = FRAGMENTS.insert(key(&flow.addrs, flow.proto, id), value, 0);
    remember_steered(flow, service);
}

/// A later fragment. `None`: not a fragment of a steered datagram (not counted — its service
/// is unknown). `Some`: the service and what was done with it.
#[inline(always)]
pub fn follow(
    ctx: &TcContext,
    frag: &LaterFragment,
    cfg: &ClassifierConfig,
) -> Option<(u32, Verdict)> {
    let key = key(&frag.addrs, frag.proto, frag.id);
    let Some(value) = entry(&key) else {
        let forwarded = FragValue {
            decision: FRAG_FORWARDED,
            stamp_ns: now(),
            ..FragValue::default()
        };
        // BPF_NOEXIST: a first fragment racing on another CPU keeps its own decision.
        let _ = FRAGMENTS.insert(key, forwarded, 1);
        return None;
    };
    if value.decision != FRAG_STEERED {
        return None;
    }
    if cfg.enabled == 0 {
        return Some((value.service, Verdict::Disabled));
    }
    let flow = Flow {
        addrs: frag.addrs,
        proto: frag.proto,
        sport_be: value.sport_be,
        dport_be: value.dport_be,
        tot_len: frag.tot_len,
        tcp_flags: 0,
        first_fragment: None,
    };
    let entry = ServiceEntry {
        service: value.service,
        listen_port: value.listen_port,
    };
    let verdict = match steer_flow(ctx, &flow, &entry, cfg.mark) {
        Verdict::SteeredListener | Verdict::SteeredEstablished | Verdict::SteeredTimeWait => {
            Verdict::SteeredFragment
        }
        other => other,
    };
    Some((value.service, verdict))
}
