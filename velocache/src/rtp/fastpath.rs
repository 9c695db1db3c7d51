//! The RTP fast path's maps, as the SIP side writes and reads them.
//!
//! The program (`velocache_rtp`) runs in slot [`XdpSlot::Rtp`] of the datapath's XDP dispatcher,
//! which loads it, attaches it to the media interfaces and pins its maps (`crate::datapath::xdp`).
//! The SIP service claims that slot while it is built and gets the three maps; a [`FastPath`] is
//! those maps. Flows enter as [`FlowSpec`]s (`install`, `remove`) and leave the kernel as
//! [`FlowStats`] (`stats`); entries a killed daemon left in pinned maps are found and expired by
//! `expire_orphans`. Flows of calls being captured carry `FLOW_CAPTURE` (`capture`); the
//! capture ring (`RTP_CAPTURE`) is handed to the SIP service once ([`FastPath::take_capture`]).
//!
//! [`XdpSlot::Rtp`]: velocache_common::xdp::XdpSlot::Rtp
use std::{collections::HashSet, sync::Mutex};

use aya::maps::{HashMap, Map, MapData, PerCpuHashMap, PerCpuValues};
use velocache_common::rtp::{FLOW_CAPTURE, FlowCounters, FlowKey, MediaFlow, RtpQuality};

use super::{FlowSpec, FlowStats, MediaPlane, RtpError, capture::CaptureRing, monotonic_ns};
use crate::datapath::SlotMaps;

/// `BPF_NOEXIST`: create only; a re-INVITE that re-learns a flow keeps its counters.
const NOEXIST: u64 = 1;

struct Maps {
    flows: HashMap<MapData, FlowKey, MediaFlow>,
    counters: PerCpuHashMap<MapData, FlowKey, FlowCounters>,
    quality: HashMap<MapData, FlowKey, RtpQuality>,
    /// Flows whose packets the kernel copies to the capture ring.
    captured: HashSet<FlowKey>,
}

/// The fast path's maps. The program runs while the XDP owner keeps it attached; dropping this
/// only closes the daemon's handles on the maps.
pub struct FastPath {
    maps: Mutex<Maps>,
    cpus: usize,
    /// `RTP_CAPTURE`, until the SIP service takes it.
    ring: Mutex<Option<Map>>,
}

fn map_err(name: &'static str, e: impl std::fmt::Display) -> RtpError {
    RtpError::Map {
        name,
        reason: e.to_string(),
    }
}

impl FastPath {
    /// The fast path over the maps of the claimed [`XdpSlot::Rtp`] slot.
    ///
    /// [`XdpSlot::Rtp`]: velocache_common::xdp::XdpSlot::Rtp
    pub fn new(mut maps: SlotMaps) -> Result<FastPath, RtpError> {
        // An object without the ring still relays; it only cannot capture.
        let ring = maps.take("RTP_CAPTURE").ok();
        let maps = Maps {
            flows: HashMap::try_from(maps.take("RTP_FLOWS")?)
                .map_err(|e| map_err("RTP_FLOWS", e))?,
            counters: PerCpuHashMap::try_from(maps.take("RTP_COUNTERS")?)
                .map_err(|e| map_err("RTP_COUNTERS", e))?,
            quality: HashMap::try_from(maps.take("RTP_QUALITY")?)
                .map_err(|e| map_err("RTP_QUALITY", e))?,
            captured: HashSet::new(),
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| map_err("RTP_COUNTERS", e))?;
        Ok(FastPath {
            maps: Mutex::new(maps),
            cpus,
            ring: Mutex::new(ring),
        })
    }

    /// The capture ring, registered with the reactor (once; `None` afterwards, or when the
    /// object has none).
    pub fn take_capture(&self) -> Option<Result<CaptureRing, RtpError>> {
        let map = self.ring.lock().ok()?.take()?;
        Some(CaptureRing::new(map))
    }

    /// Number of flows installed in the kernel.
    pub fn installed(&self) -> usize {
        self.maps
            .lock()
            .map(|m| m.flows.keys().filter_map(Result::ok).count())
            .unwrap_or(0)
    }
}

impl MediaPlane for FastPath {
    fn install(&self, flows: &[FlowSpec]) -> Result<(), RtpError> {
        let mut maps = self
            .maps
            .lock()
            .map_err(|_| map_err("RTP_FLOWS", "lock poisoned"))?;
        for f in flows {
            let Some(key) = f.key() else { continue };
            let zero = PerCpuValues::try_from(vec![FlowCounters::default(); self.cpus])
                .map_err(|e| map_err("RTP_COUNTERS", e))?;
            // Statistics first, the flow last: the program finds both from its first packet.
            if let Err(e) = maps.counters.insert(key, zero, NOEXIST)
                && !exists(&e)
            {
                return Err(map_err("RTP_COUNTERS", e));
            }
            if let Err(e) = maps.quality.insert(key, RtpQuality::default(), NOEXIST)
                && !exists(&e)
            {
                return Err(map_err("RTP_QUALITY", e));
            }
            let mut action = f.action();
            if maps.captured.contains(&key) {
                action.flags |= FLOW_CAPTURE;
            }
            maps.flows
                .insert(key, action, 0)
                .map_err(|e| map_err("RTP_FLOWS", e))?;
        }
        Ok(())
    }

    fn stats(&self, flow: &FlowSpec) -> Option<FlowStats> {
        let key = flow.key()?;
        let maps = self.maps.lock().ok()?;
        let per_cpu = maps.counters.get(&key, 0).ok()?;
        let c = per_cpu
            .iter()
            .fold(FlowCounters::default(), |sum, v| sum.merged(v));
        let quality = maps.quality.get(&key, 0).unwrap_or_default();
        Some(FlowStats {
            counters: c,
            quality,
        })
    }

    fn remove(&self, flows: &[FlowSpec]) {
        let Ok(mut maps) = self.maps.lock() else {
            return;
        };
        for f in flows {
            let Some(key) = f.key() else { continue };
            // The flow first: from then on no packet updates the statistics.
            let _ = maps.flows.remove(&key);
            let _ = maps.counters.remove(&key);
            let _ = maps.quality.remove(&key);
            maps.captured.remove(&key);
        }
    }

    fn capture(&self, flows: &[FlowSpec], on: bool) -> Result<(), RtpError> {
        let mut maps = self
            .maps
            .lock()
            .map_err(|_| map_err("RTP_FLOWS", "lock poisoned"))?;
        for f in flows {
            let Some(key) = f.key() else { continue };
            if on {
                maps.captured.insert(key);
            } else {
                maps.captured.remove(&key);
            }
            // Only flows in the kernel are updated; one installed later gets the mark then.
            let Ok(mut action) = maps.flows.get(&key, 0) else {
                continue;
            };
            if on {
                action.flags |= FLOW_CAPTURE;
            } else {
                action.flags &= !FLOW_CAPTURE;
            }
            maps.flows
                .insert(key, action, 0)
                .map_err(|e| map_err("RTP_FLOWS", e))?;
        }
        Ok(())
    }

    fn expire_orphans(&self, known: &[FlowSpec], idle_ns: u64) -> usize {
        let known: HashSet<FlowKey> = known.iter().filter_map(FlowSpec::key).collect();
        let Ok(mut maps) = self.maps.lock() else {
            return 0;
        };
        let now = monotonic_ns();
        let stale: Vec<FlowKey> = maps
            .flows
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !known.contains(k))
            .filter(|k| {
                let last = maps
                    .counters
                    .get(k, 0)
                    .map(|v| v.iter().map(|c| c.last_seen_ns).max().unwrap_or(0))
                    .unwrap_or(0);
                now.saturating_sub(last) > idle_ns
            })
            .collect();
        for k in &stale {
            let _ = maps.flows.remove(k);
            let _ = maps.counters.remove(k);
            let _ = maps.quality.remove(k);
            maps.captured.remove(k);
        }
        stale.len()
    }
}

fn exists(e: &aya::maps::MapError) -> bool {
    matches!(e, aya::maps::MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EEXIST))
}

#[cfg(test)]
#[path = "fastpath_tests.rs"]
mod tests;
