//! The one owner of XDP on the gateway's interfaces: a dispatcher attached to each interface
//! that needs XDP, and the slot programs it chains there (`velocache_common::xdp`).
//!
//! Data enters as claims. A service, while it is built, claims its slot on the interfaces it
//! names ([`XdpOwner::claim`]): the first claim loads the `velocache-xdp` object (the dispatcher,
//! every slot program and their maps, reusing a slot's pins left by a daemon that was killed),
//! and each claim puts its program into its slot and hands the service the slot's own maps
//! ([`SlotMaps`]), which the service then reads and writes for as long as it runs. Nothing is
//! attached at claim time: the kernel side calls [`XdpOwner::attach`] once the listeners are
//! served (`crate::app` documents the order), which writes each claimed interface's slot mask and
//! attaches the dispatcher to it; a claim made later is attached at once. What leaves is one
//! `bpf_link` per interface and the frames the slot programs keep (redirect, `XDP_TX`, drop);
//! everything else reaches the stack unmodified.
//!
//! [`XdpOwner::detach`] (a clean stop) detaches the dispatcher everywhere and removes the pins.
//! A daemon that dies without it loses its links with its file descriptors — no interface keeps
//! a program without a daemon — while the pinned maps stay for the next one. Dropping the last
//! handle does what `detach` does.
//!
//! veth (DESIGN.md pitfalls): a frame a slot program redirects into a veth is dropped unless the
//! veth's peer runs XDP or has GRO on; generic mode avoids that but is slow. The dispatcher is
//! attached in the mode the kernel picks (native where the driver has it) and falls back to
//! generic; preparing the peers is the operator's (and the lab's) job.
//!
//! # Layout
//! - `object`: loading the object, filling slots, interface masks, pins.
//! - `inspect`: what an interface's XDP hook runs, for `velocache datapath show`.
//! - `tests`: the dispatcher's chain through `BPF_PROG_TEST_RUN`, with the probe object.

mod inspect;
mod object;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc};

use aya::{
    maps::Map,
    programs::{ProgramError, XdpMode, xdp::XdpLinkId},
};
use parking_lot::Mutex;
use thiserror::Error;
use tracing::{debug, error, info, warn};
use velocache_common::xdp::{XdpSlot, slots_in};

pub use inspect::{XdpAttachment, inspect_xdp};

use crate::config::Config;

/// The XDP object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/velocache-xdp"));

/// Why a slot could not be claimed.
#[derive(Debug, Error)]
pub enum XdpError {
    /// The object did not load (verifier rejection, missing BTF, no permission).
    #[error("loading the XDP programs failed: {0}")]
    Load(#[source] aya::EbpfError),
    /// A program is missing or could not be loaded into the kernel.
    #[error("XDP program `{name}`: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// A map is missing or an update failed.
    #[error("XDP map `{name}`: {reason}")]
    Map {
        /// Map name.
        name: &'static str,
        /// What failed.
        reason: String,
    },
    /// The dispatcher could not be attached to an interface.
    #[error("attaching the XDP dispatcher to `{interface}` failed: {source}")]
    Attach {
        /// Interface name.
        interface: String,
        /// aya's error.
        #[source]
        source: ProgramError,
    },
    /// An interface named in a claim does not exist.
    #[error("interface `{0}` does not exist")]
    NoSuchInterface(String),
    /// Two services claimed the same slot.
    #[error("XDP slot `{0}` is already claimed")]
    AlreadyClaimed(&'static str),
}

/// Where the slots' maps are kept across restarts.
#[derive(Debug, Clone, Default)]
pub struct XdpSettings {
    /// Per slot, a bpffs directory its maps are pinned in. Not on bpffs: no pinning.
    pub pin_dirs: Vec<(XdpSlot, PathBuf)>,
}

impl XdpSettings {
    /// From the configuration: the RTP fast path's maps under `[sip] pin_dir`.
    pub fn from_config(config: &Config) -> XdpSettings {
        let mut pin_dirs = Vec::new();
        if config.sip.enabled && config.sip.media_fast_path {
            pin_dirs.push((XdpSlot::Rtp, config.sip.pin_dir.clone()));
        }
        XdpSettings { pin_dirs }
    }
}

/// The maps of one claimed slot, for the service that claimed it.
pub struct SlotMaps {
    slot: XdpSlot,
    maps: Vec<(&'static str, Map)>,
}

impl SlotMaps {
    /// Take map `name` (one of [`XdpSlot::maps`]).
    pub fn take(&mut self, name: &'static str) -> Result<Map, XdpError> {
        let i = self
            .maps
            .iter()
            .position(|(n, _)| *n == name)
            .ok_or_else(|| XdpError::Map {
                name,
                reason: format!("not a map of slot `{}`, or taken", self.slot.name()),
            })?;
        Ok(self.maps.swap_remove(i).1)
    }
}

/// The owner of every XDP attachment: cheap to clone (one shared state), loads nothing until a
/// slot is claimed.
#[derive(Clone)]
pub struct XdpOwner {
    inner: Arc<Mutex<Owner>>,
}

struct Claim {
    slot: XdpSlot,
    interfaces: Vec<String>,
}

struct Attached {
    interface: String,
    ifindex: u32,
    link: XdpLinkId,
}

struct Owner {
    settings: XdpSettings,
    /// The object the slot programs and maps come from.
    object: &'static [u8],
    loaded: Option<object::Loaded>,
    claims: Vec<Claim>,
    attached: Vec<Attached>,
    /// `attach` was called: claims from now on are attached at once.
    started: bool,
}

/// Human name of a slot's user, for the log lines operators know.
fn title(slot: XdpSlot) -> &'static str {
    match slot {
        XdpSlot::Rtp => "RTP fast path",
        XdpSlot::Dns => "DNS kernel answers",
    }
}

impl XdpOwner {
    /// An owner of the `velocache-xdp` object; nothing is loaded yet.
    pub fn new(settings: XdpSettings) -> XdpOwner {
        XdpOwner::with_object(OBJECT, settings)
    }

    fn with_object(object: &'static [u8], settings: XdpSettings) -> XdpOwner {
        XdpOwner {
            inner: Arc::new(Mutex::new(Owner {
                settings,
                object,
                loaded: None,
                claims: Vec::new(),
                attached: Vec::new(),
                started: false,
            })),
        }
    }

    /// Claim `slot` on `interfaces`: load its program into the slot and hand over its maps. The
    /// slot runs on those interfaces from [`XdpOwner::attach`] on (at once if that already ran).
    pub fn claim(&self, slot: XdpSlot, interfaces: &[String]) -> Result<SlotMaps, XdpError> {
        for iface in interfaces {
            if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
                return Err(XdpError::NoSuchInterface(iface.clone()));
            }
        }
        let mut owner = self.inner.lock();
        if owner.claims.iter().any(|c| c.slot == slot) {
            return Err(XdpError::AlreadyClaimed(slot.name()));
        }
        let loaded = owner.loaded()?;
        loaded.fill(slot as u32, slot.program())?;
        let maps = loaded.take_maps(slot.maps())?;
        owner.claims.push(Claim {
            slot,
            interfaces: interfaces.to_vec(),
        });
        debug!(slot = slot.name(), interfaces = ?interfaces, "XDP slot claimed");
        if owner.started {
            owner.attach_claimed();
        }
        Ok(SlotMaps { slot, maps })
    }

    /// Whether any slot is claimed (so there is something to attach).
    pub fn claimed(&self) -> bool {
        !self.inner.lock().claims.is_empty()
    }

    /// Attach the dispatcher to every claimed interface with the claimed slots enabled. An
    /// interface that refuses is logged and left without XDP (its slots' frames then follow the
    /// stack, as they would without VeloCache); the others go on.
    pub fn attach(&self) {
        let mut owner = self.inner.lock();
        owner.started = true;
        owner.attach_claimed();
    }

    /// Detach from every interface and remove the pins: a clean stop.
    pub fn detach(&self) {
        self.inner.lock().release();
    }

    /// Run `program` of the loaded object on `frame` (`BPF_PROG_TEST_RUN`, ingress on `lo`):
    /// (action, frame afterwards).
    #[cfg(test)]
    pub(crate) fn test_run(&self, program: &'static str, frame: &[u8]) -> (u32, Vec<u8>) {
        use aya::programs::{TestRun as _, TestRunOptions};
        let mut owner = self.inner.lock();
        let loaded = owner.loaded().expect("loading the XDP object");
        let prog = loaded.program(program).expect("the program");
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..Default::default()
            })
            .expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    /// Enable `slots` on interface `ifindex` without attaching anything (test runs need no link).
    #[cfg(test)]
    pub(crate) fn enable_for_test(&self, ifindex: u32, slots: &[XdpSlot]) {
        let mask = slots.iter().fold(0, |m, s| m | s.bit());
        let mut owner = self.inner.lock();
        let loaded = owner.loaded().expect("loading the XDP object");
        loaded.set_mask(ifindex, mask).expect("XDP_INTERFACES");
    }
}

impl Owner {
    fn loaded(&mut self) -> Result<&mut object::Loaded, XdpError> {
        if self.loaded.is_none() {
            self.loaded = Some(object::Loaded::load(self.object, &self.settings)?);
        }
        self.loaded.as_mut().ok_or(XdpError::Map {
            name: "XDP_SLOTS",
            reason: "the object is not loaded".into(),
        })
    }

    /// Enable the claimed slots on their interfaces and attach where not attached yet.
    fn attach_claimed(&mut self) {
        let Some(loaded) = self.loaded.as_mut() else {
            return;
        };
        let mut masks: BTreeMap<&str, u32> = BTreeMap::new();
        for c in &self.claims {
            for iface in &c.interfaces {
                *masks.entry(iface.as_str()).or_default() |= c.slot.bit();
            }
        }
        let mut failed: Vec<&str> = Vec::new();
        for (iface, mask) in &masks {
            let ifindex = match nix::net::if_::if_nametoindex(*iface) {
                Ok(i) => i,
                Err(e) => {
                    error!(interface = %iface, error = %e, "interface gone: no XDP on it");
                    failed.push(iface);
                    continue;
                }
            };
            // The mask before the link: the first frame finds its slots.
            if let Err(e) = loaded.set_mask(ifindex, *mask) {
                error!(interface = %iface, error = %e, "cannot enable XDP slots: no XDP on it");
                failed.push(iface);
                continue;
            }
            if self.attached.iter().any(|a| a.ifindex == ifindex) {
                continue;
            }
            match attach_dispatcher(loaded, iface) {
                Ok((link, mode)) => {
                    let slots: Vec<&str> = slots_in(*mask).map(XdpSlot::name).collect();
                    info!(interface = %iface, mode, slots = ?slots, "XDP dispatcher attached");
                    self.attached.push(Attached {
                        interface: iface.to_string(),
                        ifindex,
                        link,
                    });
                }
                Err(e) => {
                    error!(interface = %iface, error = %e, "cannot attach the XDP dispatcher: its slots' frames follow the stack there");
                    let _ = loaded.set_mask(ifindex, 0);
                    failed.push(iface);
                }
            }
        }
        for c in &self.claims {
            let interfaces: Vec<&String> = c
                .interfaces
                .iter()
                .filter(|i| !failed.contains(&i.as_str()))
                .collect();
            let pinned = loaded.pinned.iter().find(|p| p.slot == c.slot);
            info!(
                slot = c.slot.name(),
                interfaces = ?interfaces,
                pinned = pinned.map(|p| p.dir.display().to_string()),
                reused_pinned_maps = pinned.map_or(0, |p| p.reused),
                "{} attached",
                title(c.slot)
            );
        }
    }

    /// Detach everywhere, remove the pins, drop the programs (a service's maps stay usable).
    fn release(&mut self) {
        let Some(mut loaded) = self.loaded.take() else {
            return;
        };
        let interfaces: Vec<String> = self.attached.iter().map(|a| a.interface.clone()).collect();
        for a in self.attached.drain(..) {
            if let Ok(dispatcher) = loaded.dispatcher()
                && let Err(e) = dispatcher.detach(a.link)
            {
                warn!(interface = %a.interface, error = %e, "detaching the XDP dispatcher failed");
            }
            let _ = loaded.set_mask(a.ifindex, 0);
        }
        loaded.remove_pins();
        for c in self.claims.drain(..) {
            info!(slot = c.slot.name(), "{} detached", title(c.slot));
        }
        if !interfaces.is_empty() {
            info!(interfaces = ?interfaces, "XDP dispatcher detached");
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.release();
    }
}

/// Attach in the mode the kernel picks (native where the driver has it), else generic.
fn attach_dispatcher(
    loaded: &mut object::Loaded,
    iface: &str,
) -> Result<(XdpLinkId, &'static str), XdpError> {
    let program = loaded.dispatcher()?;
    match program.attach(iface, XdpMode::Default) {
        Ok(link) => Ok((link, "auto")),
        Err(e) => {
            debug!(interface = iface, error = %e, "native XDP refused; trying generic");
            program
                .attach(iface, XdpMode::Skb)
                .map(|link| (link, "generic"))
                .map_err(|source| XdpError::Attach {
                    interface: iface.to_string(),
                    source,
                })
        }
    }
}
