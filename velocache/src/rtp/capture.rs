//! The daemon's end of `RTP_CAPTURE`: frames of captured flows, copied by the XDP program.
//!
//! The kernel copies each frame of a flow flagged `FLOW_CAPTURE` (set by
//! [`super::MediaPlane::capture`]) into the ring buffer as a `CaptureEvent`; [`CaptureRing`]
//! waits on the ring from the reactor and hands each event on as a [`Frame`] (the SIP service's
//! capture task routes it to its call's capture). Wall-clock time is derived here from the
//! kernel's monotonic stamp.
use std::{
    io,
    time::{SystemTime, UNIX_EPOCH},
};

use aya::maps::{Map, MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use velocache_common::rtp::CAPTURE_BYTES;

use super::{RtpError, monotonic_ns};

/// Bytes before the frame in a `CaptureEvent`: `ts_ns` (8), `len` (4), `caplen` (4).
const HEAD: usize = 16;

/// One copied frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Arrival, Unix microseconds.
    pub ts_us: u64,
    /// The frame's length on the wire.
    pub len: u32,
    /// The frame (possibly cut at the snap length), from its Ethernet header on.
    pub data: Vec<u8>,
}

/// Decode one ring buffer record; `None` if it is not a whole `CaptureEvent`. `now_ns` and
/// `now_us` are the monotonic and wall clocks read together, to place the kernel's stamp.
pub fn decode(record: &[u8], now_ns: u64, now_us: u64) -> Option<Frame> {
    let head = record.get(..HEAD)?;
    let ts_ns = u64::from_ne_bytes(head[0..8].try_into().ok()?);
    let len = u32::from_ne_bytes(head[8..12].try_into().ok()?);
    let caplen = u32::from_ne_bytes(head[12..16].try_into().ok()?) as usize;
    if caplen >= CAPTURE_BYTES {
        return None;
    }
    let data = record.get(HEAD..HEAD + caplen)?.to_vec();
    let ago_us = now_ns.saturating_sub(ts_ns) / 1_000;
    Some(Frame {
        ts_us: now_us.saturating_sub(ago_us),
        len,
        data,
    })
}

/// `RTP_CAPTURE`, registered with the reactor.
pub struct CaptureRing {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl CaptureRing {
    /// The ring over the slot's `RTP_CAPTURE` map.
    pub fn new(map: Map) -> Result<CaptureRing, RtpError> {
        let err = |e: &dyn std::fmt::Display| RtpError::Map {
            name: "RTP_CAPTURE",
            reason: e.to_string(),
        };
        let ring = RingBuf::try_from(map).map_err(|e| err(&e))?;
        let ring = crate::datapath::async_ring_buf(ring).map_err(|e| err(&e))?;
        Ok(CaptureRing { ring })
    }

    /// Wait until frames are there, then hand each to `f` (in ring order).
    pub async fn drain(&mut self, mut f: impl FnMut(Frame)) -> io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let now_ns = monotonic_ns();
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            if let Some(frame) = decode(&item, now_ns, now_us) {
                f(frame);
            }
        }
        guard.clear_ready();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode_with_wall_clock_time_and_bad_ones_do_not() {
        let mut rec = Vec::new();
        rec.extend_from_slice(&9_000_000u64.to_ne_bytes());
        rec.extend_from_slice(&214u32.to_ne_bytes());
        rec.extend_from_slice(&3u32.to_ne_bytes());
        rec.extend_from_slice(&[1, 2, 3]);
        rec.resize(HEAD + CAPTURE_BYTES, 0);
        let f = decode(&rec, 10_000_000, 5_000_000).unwrap();
        assert_eq!(f.ts_us, 5_000_000 - 1_000);
        assert_eq!((f.len, f.data.as_slice()), (214, &[1u8, 2, 3][..]));
        assert_eq!(decode(&rec[..10], 0, 0), None);
        rec[12..16].copy_from_slice(&(CAPTURE_BYTES as u32).to_ne_bytes());
        assert_eq!(decode(&rec, 0, 0), None);
    }
}
