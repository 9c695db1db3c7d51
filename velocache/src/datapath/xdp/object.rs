//! The loaded `velocache-xdp` object: its programs, the dispatcher's two maps, and the pins of
//! the slots' maps.
//!
//! Everything XDP is one object so that the slot programs reach the dispatcher's program array
//! and interface masks without pinning them (aya 0.14 shares a map between objects only through
//! a pin): those two maps, and with them every attachment, die with the daemon. A slot's own maps
//! are pinned when the daemon is given a directory on bpffs for them; the loader then reuses
//! the pins a killed daemon left, so the new programs work on the old entries from their first
//! frame.
use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, Map, MapData, ProgramArray},
    programs::Xdp,
};
use tracing::{info, warn};
use velocache_common::xdp::{XDP_DISPATCHER, XdpSlot};

use super::{XdpError, XdpSettings};

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A slot whose maps are pinned.
pub(super) struct Pinned {
    pub(super) slot: XdpSlot,
    pub(super) dir: PathBuf,
    /// How many of its maps were found pinned (left by an earlier daemon) and reused.
    pub(super) reused: usize,
}

/// The object, loaded and verified; nothing attached.
pub(super) struct Loaded {
    ebpf: Ebpf,
    slots: ProgramArray<MapData>,
    interfaces: HashMap<MapData, u32, u32>,
    pub(super) pinned: Vec<Pinned>,
}

fn map_err(name: &'static str, e: impl std::fmt::Display) -> XdpError {
    XdpError::Map {
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

/// The pin directories of `settings` that can hold pins, created if missing.
fn pin_dirs(settings: &XdpSettings) -> Vec<(XdpSlot, PathBuf)> {
    let mut out = Vec::new();
    for (slot, dir) in &settings.pin_dirs {
        if !on_bpffs(dir) {
            info!(slot = slot.name(), dir = %dir.display(), "pin directory is not on bpffs; the slot's maps will not survive a restart");
            continue;
        }
        match std::fs::create_dir_all(dir) {
            Ok(()) => out.push((*slot, dir.clone())),
            Err(e) => {
                warn!(slot = slot.name(), dir = %dir.display(), error = %e, "cannot create the pin directory; the slot's maps will not survive a restart");
            }
        }
    }
    out
}

impl Loaded {
    /// Load `object` (reusing pinned maps where `settings` says so) and verify the dispatcher.
    /// On error no pin is left behind that was not there before.
    pub(super) fn load(object: &[u8], settings: &XdpSettings) -> Result<Loaded, XdpError> {
        let dirs = pin_dirs(settings);
        let mut loader = EbpfLoader::new();
        let mut pinned = Vec::new();
        for (slot, dir) in dirs {
            let mut reused = 0;
            for name in slot.maps() {
                let path = dir.join(name);
                reused += usize::from(path.exists());
                loader.map_pin_path(name, path);
            }
            pinned.push(Pinned { slot, dir, reused });
        }
        let mut ebpf = match loader.load(object) {
            Ok(ebpf) => ebpf,
            Err(e) => {
                remove_new_pins(&pinned);
                return Err(XdpError::Load(e));
            }
        };
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| map_err(name, "missing from the object"))
        };
        let slots = ProgramArray::try_from(take(&mut ebpf, "XDP_SLOTS")?)
            .map_err(|e| map_err("XDP_SLOTS", e))?;
        let interfaces = HashMap::try_from(take(&mut ebpf, "XDP_INTERFACES")?)
            .map_err(|e| map_err("XDP_INTERFACES", e))?;
        let mut loaded = Loaded {
            ebpf,
            slots,
            interfaces,
            pinned,
        };
        loaded.program(XDP_DISPATCHER)?;
        Ok(loaded)
    }

    /// The program `name`, loaded into the kernel (verified) if it was not yet.
    pub(super) fn program(&mut self, name: &'static str) -> Result<&mut Xdp, XdpError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(XdpError::Program {
                name,
                source: aya::programs::ProgramError::UnexpectedProgramType,
            })?
            .try_into()
            .map_err(|source| XdpError::Program { name, source })?;
        if program.fd().is_err() {
            program
                .load()
                .map_err(|source| XdpError::Program { name, source })?;
        }
        Ok(program)
    }

    /// Put program `name` into slot number `index` of the dispatcher's program array.
    pub(super) fn fill(&mut self, index: u32, name: &'static str) -> Result<(), XdpError> {
        let fd = self
            .program(name)?
            .fd()
            .map_err(|source| XdpError::Program { name, source })?
            .try_clone()
            .map_err(|e| map_err("XDP_SLOTS", e))?;
        self.slots
            .set(index, &fd, 0)
            .map_err(|e| map_err("XDP_SLOTS", e))
    }

    /// Take the maps `names` out of the object, for the service that claimed them.
    pub(super) fn take_maps(
        &mut self,
        names: &[&'static str],
    ) -> Result<Vec<(&'static str, Map)>, XdpError> {
        names
            .iter()
            .map(|name| {
                self.ebpf
                    .take_map(name)
                    .map(|m| (*name, m))
                    .ok_or_else(|| map_err(name, "missing from the object, or already taken"))
            })
            .collect()
    }

    /// Set the slots enabled on interface `ifindex` (0: none).
    pub(super) fn set_mask(&mut self, ifindex: u32, mask: u32) -> Result<(), XdpError> {
        if mask == 0 {
            return match self.interfaces.remove(&ifindex) {
                Ok(()) => Ok(()),
                Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(aya::maps::MapError::SyscallError(s))
                    if s.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                Err(e) => Err(map_err("XDP_INTERFACES", e)),
            };
        }
        self.interfaces
            .insert(ifindex, mask, 0)
            .map_err(|e| map_err("XDP_INTERFACES", e))
    }

    /// The dispatcher, loaded.
    pub(super) fn dispatcher(&mut self) -> Result<&mut Xdp, XdpError> {
        self.program(XDP_DISPATCHER)
    }

    /// Remove every pin (a clean stop: the next daemon starts with empty maps).
    pub(super) fn remove_pins(&self) {
        for p in &self.pinned {
            for name in p.slot.maps() {
                let _ = std::fs::remove_file(p.dir.join(name));
            }
            let _ = std::fs::remove_dir(&p.dir);
        }
    }

    /// The underlying object, for the tests' direct map access.
    #[cfg(test)]
    pub(super) fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// After a failed load: remove the pins this attempt may have created (none of a slot whose
/// pins were all there before).
fn remove_new_pins(pinned: &[Pinned]) {
    for p in pinned.iter().filter(|p| p.reused == 0) {
        for name in p.slot.maps() {
            let _ = std::fs::remove_file(p.dir.join(name));
        }
        let _ = std::fs::remove_dir(&p.dir);
    }
}
