//! Loading the `velocache-rtp` XDP program, attaching it to the media interfaces, and the
//! three maps it shares with the daemon.
//!
//! The program is its own object (not part of the classifier's): it exists only while the SIP
//! service relays media, and its maps can be pinned under bpffs without dragging the
//! classifier's configuration maps along. With a pin directory on bpffs the maps outlive the
//! daemon, so a restarted daemon finds the flows of calls in progress still installed (the new
//! program uses them from its first packet) and expires those nobody refreshes. A clean stop
//! detaches the program and removes the pins; a killed daemon's XDP links die with its file
//! descriptors, so the interfaces never keep a program without a daemon.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuHashMap, PerCpuValues},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use tracing::{debug, info, warn};
use velocache_common::rtp::{FlowCounters, FlowKey, MediaFlow, RTP_PROGRAM, RtpQuality};

use super::{FlowSpec, FlowStats, MediaPlane, RtpError, monotonic_ns};

/// The XDP object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/velocache-rtp"));

const MAPS: [&str; 3] = ["RTP_FLOWS", "RTP_COUNTERS", "RTP_QUALITY"];
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// `BPF_NOEXIST`: create only; a re-INVITE that re-learns a flow keeps its counters.
const NOEXIST: u64 = 1;

/// Where and how the fast path runs.
#[derive(Debug, Clone)]
pub struct FastPathConfig {
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    /// bpffs directory for the maps; `None` or not on bpffs: no pinning.
    pub pin_dir: Option<PathBuf>,
}

struct Maps {
    flows: HashMap<MapData, FlowKey, MediaFlow>,
    counters: PerCpuHashMap<MapData, FlowKey, FlowCounters>,
    quality: HashMap<MapData, FlowKey, RtpQuality>,
}

/// The running fast path. Dropping it detaches the program and removes the pins.
pub struct FastPath {
    ebpf: Mutex<Ebpf>,
    maps: Mutex<Maps>,
    links: Vec<(String, XdpLinkId)>,
    pinned: Option<PathBuf>,
    cpus: usize,
}

fn map_err(name: &'static str, e: impl std::fmt::Display) -> RtpError {
    RtpError::Map {
        name,
        reason: e.to_string(),
    }
}

fn on_bpffs(dir: &Path) -> bool {
    let probe = if dir.exists() {
        dir
    } else {
        dir.parent().unwrap_or(dir)
    };
    nix::sys::statfs::statfs(probe).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

impl FastPath {
    /// Load the program (reusing pinned maps when present) and attach it everywhere. On error
    /// nothing stays attached.
    pub fn start(cfg: &FastPathConfig) -> Result<FastPath, RtpError> {
        for iface in &cfg.interfaces {
            if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
                return Err(RtpError::NoSuchInterface(iface.clone()));
            }
        }
        let pinned = match &cfg.pin_dir {
            Some(dir) if on_bpffs(dir) => match std::fs::create_dir_all(dir) {
                Ok(()) => Some(dir.clone()),
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot create the pin directory; RTP flows will not survive a restart");
                    None
                }
            },
            Some(dir) => {
                info!(dir = %dir.display(), "pin directory is not on bpffs; RTP flows will not survive a restart");
                None
            }
            None => None,
        };
        let mut loader = EbpfLoader::new();
        let paths: Vec<(&str, PathBuf)> = match &pinned {
            Some(dir) => MAPS.iter().map(|m| (*m, dir.join(m))).collect(),
            None => Vec::new(),
        };
        let reused = paths.iter().filter(|(_, p)| p.exists()).count();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).map_err(RtpError::Load)?;
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| map_err(name, "missing from the object"))
        };
        let maps = Maps {
            flows: HashMap::try_from(take(&mut ebpf, "RTP_FLOWS")?)
                .map_err(|e| map_err("RTP_FLOWS", e))?,
            counters: PerCpuHashMap::try_from(take(&mut ebpf, "RTP_COUNTERS")?)
                .map_err(|e| map_err("RTP_COUNTERS", e))?,
            quality: HashMap::try_from(take(&mut ebpf, "RTP_QUALITY")?)
                .map_err(|e| map_err("RTP_QUALITY", e))?,
        };
        let program_err = |interface: &str, source| RtpError::Program {
            interface: interface.to_string(),
            source,
        };
        let program: &mut Xdp = ebpf
            .program_mut(RTP_PROGRAM)
            .ok_or_else(|| map_err("program", "velocache_rtp missing from the object"))?
            .try_into()
            .map_err(|e| program_err("-", e))?;
        program.load().map_err(|e| program_err("-", e))?;
        let mut links = Vec::new();
        for iface in &cfg.interfaces {
            // Native (driver) XDP where the driver has it, the generic hook otherwise.
            let link = match program.attach(iface, XdpMode::Default) {
                Ok(l) => Ok(l),
                Err(e) => {
                    debug!(interface = %iface, error = %e, "native XDP refused; trying generic");
                    program.attach(iface, XdpMode::Skb)
                }
            };
            match link {
                Ok(l) => links.push((iface.clone(), l)),
                Err(e) => {
                    for (_, l) in links.drain(..) {
                        let _ = program.detach(l);
                    }
                    if let Some(dir) = &pinned {
                        remove_pins(dir);
                    }
                    return Err(program_err(iface, e));
                }
            }
        }
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| map_err("RTP_COUNTERS", e))?;
        info!(
            interfaces = ?cfg.interfaces,
            pinned = pinned.as_ref().map(|p| p.display().to_string()),
            reused_pinned_maps = reused,
            "RTP fast path attached"
        );
        Ok(FastPath {
            ebpf: Mutex::new(ebpf),
            maps: Mutex::new(maps),
            links,
            pinned,
            cpus,
        })
    }

    /// Number of flows installed in the kernel.
    pub fn installed(&self) -> usize {
        self.maps
            .lock()
            .map(|m| m.flows.keys().filter_map(Result::ok).count())
            .unwrap_or(0)
    }
}

fn remove_pins(dir: &Path) {
    for m in MAPS {
        let _ = std::fs::remove_file(dir.join(m));
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for FastPath {
    fn drop(&mut self) {
        if let Ok(mut ebpf) = self.ebpf.lock()
            && let Some(p) = ebpf.program_mut(RTP_PROGRAM)
        {
            let p: Result<&mut Xdp, _> = p.try_into();
            if let Ok(p) = p {
                for (iface, link) in self.links.drain(..) {
                    if let Err(e) = p.detach(link) {
                        warn!(interface = %iface, error = %e, "detaching the RTP fast path failed");
                    }
                }
            }
        }
        if let Some(dir) = &self.pinned {
            remove_pins(dir);
        }
        info!("RTP fast path detached");
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
            maps.flows
                .insert(key, f.action(), 0)
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
        }
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
