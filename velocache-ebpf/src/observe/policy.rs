//! The kernel's SNI policy: the name and its dot suffixes looked up in `TLS_SNI_POLICY`, the
//! earliest rule kept (see `velocache_common::tls` and the daemon's `observe::policy`, which
//! writes the entries).
use velocache_common::tls::{SNI_HASH_SEED, SNI_MAX, SniKey, sni_hash_step};

use super::{hello::Scratch, maps::TLS_SNI_POLICY};

/// Dot suffixes of a name looked up (the shortest ones: `.org`, `.example.org`, …); a rule
/// naming a suffix of more labels is matched by the daemon instead (a punt the daemon resets).
pub const MAX_SUFFIXES: u32 = 16;

/// Look the name and each of its dot suffixes up in `TLS_SNI_POLICY` and keep the entry of the
/// earliest rule in the event.
///
/// Two passes, each cheap to verify. The first walks the name backwards, hashing, and notes the
/// hash at each of the last [`MAX_SUFFIXES`] dots in memory; the name ends at the `sni` array's
/// last byte, so it reads constant offsets and never does arithmetic with the name's length —
/// the verifier has no reason to track that length precisely, and the up to 255 ways out of the
/// pass are one state for what follows. The second looks up the noted suffixes, the whole name
/// and the empty suffix.
///
/// # Safety
/// `s` is this CPU's scratch with a name of `sni_len` (1..=255) bytes, right-aligned.
#[inline(always)]
pub unsafe fn policy(s: *mut Scratch) {
    let n = unsafe { (*s).ev.sni_len };
    unsafe { core::ptr::write_volatile(&raw mut (*s).suffixes, 0) };
    let mut hash = SNI_HASH_SEED;
    for k in 0..SNI_MAX as u32 {
        if k >= n {
            break;
        }
        let c = unsafe { (*s).ev.sni[SNI_MAX - k as usize] };
        hash = sni_hash_step(hash, c);
        if c == b'.' {
            // Memory only (see `Scratch::walk`), volatile so that the compiler cannot keep the
            // count in a register across the pass: read back, it is one unknown for every path.
            unsafe {
                let count = &raw mut (*s).suffixes;
                let i = core::ptr::read_volatile(count);
                if i < MAX_SUFFIXES {
                    (*s).suffix_hash[(i & (MAX_SUFFIXES - 1)) as usize] = hash;
                    (*s).suffix_len[(i & (MAX_SUFFIXES - 1)) as usize] = k + 1;
                    core::ptr::write_volatile(count, i + 1);
                }
            }
        }
    }
    // The whole name, and the empty suffix (globs with no literal tail, "ads.*", punt all).
    unsafe {
        consider(s, hash, n);
        consider(s, SNI_HASH_SEED, 0);
    }
    for i in 0..MAX_SUFFIXES {
        unsafe {
            if i >= core::ptr::read_volatile(&raw const (*s).suffixes) {
                break;
            }
            let at = (i & (MAX_SUFFIXES - 1)) as usize;
            consider(s, (*s).suffix_hash[at], (*s).suffix_len[at]);
        }
    }
}

/// # Safety
/// `s` is this CPU's scratch.
#[inline(always)]
unsafe fn consider(s: *mut Scratch, hash: u64, len: u32) {
    let key = SniKey { hash, len, _pad: 0 };
    // SAFETY: a map value valid for this run, copied out at once.
    if let Some(p) = unsafe { TLS_SNI_POLICY.get(key) } {
        let p = *p;
        unsafe {
            if p.rule < (*s).ev.policy_rule {
                (*s).ev.policy_rule = p.rule;
                (*s).ev.policy_action = p.action;
            }
        }
    }
}
