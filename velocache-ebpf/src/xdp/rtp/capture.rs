//! The copy of a captured flow's frame into `RTP_CAPTURE`: one [`CaptureEvent`] reserved in
//! the ring buffer, the frame loaded into it with `bpf_xdp_load_bytes` in power-of-two chunks
//! (constant sizes the verifier checks without tracking a variable length), then submitted.
//! A full ring buffer loses the copy; the frame itself goes on untouched either way.
use core::ffi::c_void;

use aya_ebpf::{EbpfContext, helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use velocache_common::rtp::{CAPTURE_BYTES, CaptureEvent};

use super::maps::RTP_CAPTURE;

/// Copy the frame (up to `CAPTURE_BYTES - 1` bytes) into the capture ring, stamped `now`.
#[inline(always)]
pub fn copy(ctx: &XdpContext, now: u64) {
    let len = (ctx.data_end() - ctx.data()) as u32;
    let n = if len > (CAPTURE_BYTES - 1) as u32 {
        (CAPTURE_BYTES - 1) as u32
    } else {
        len
    };
    let Some(mut entry) = RTP_CAPTURE.reserve::<CaptureEvent>(0) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved, writable `CaptureEvent` until submit or discard.
    let ok = unsafe {
        (*ev).ts_ns = now;
        (*ev).len = len;
        (*ev).caplen = n;
        load_chunks(ctx, n, (*ev).data.as_mut_ptr())
    };
    if ok {
        entry.submit(0);
    } else {
        entry.discard(0);
    }
}

/// Load the first `n` bytes (`n < CAPTURE_BYTES`) of the frame into `dst`, one constant-size
/// helper call per set bit of `n`.
///
/// # Safety
/// `dst` points to at least `CAPTURE_BYTES` writable bytes.
#[inline(always)]
unsafe fn load_chunks(ctx: &XdpContext, n: u32, dst: *mut u8) -> bool {
    macro_rules! chunk {
        ($size:literal) => {
            if n & $size != 0 {
                // The bytes before this chunk: the higher bits of `n`; masked so the verifier
                // sees `off + $size <= CAPTURE_BYTES`.
                let off = n & !(2 * $size - 1) & (CAPTURE_BYTES as u32 - 1);
                // SAFETY: `off + $size <= n < CAPTURE_BYTES`, inside the caller's buffer.
                let rc = unsafe {
                    bpf_xdp_load_bytes(
                        ctx.as_ptr() as *mut _,
                        off,
                        dst.add(off as usize) as *mut c_void,
                        $size,
                    )
                };
                if rc != 0 {
                    return false;
                }
            }
        };
    }
    chunk!(1024);
    chunk!(512);
    chunk!(256);
    chunk!(128);
    chunk!(64);
    chunk!(32);
    chunk!(16);
    chunk!(8);
    chunk!(4);
    chunk!(2);
    chunk!(1);
    true
}
