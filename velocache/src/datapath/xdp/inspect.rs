//! What runs at an interface's XDP hook, asked of the kernel: the attached program and its mode
//! (from `ip -d -j link`, which reads it over netlink for links and legacy attachments alike),
//! and, when it is VeloCache's dispatcher, the slots enabled there (its `XDP_INTERFACES` map,
//! reached through the program's map ids). Data leaves as an [`XdpAttachment`] for
//! `velocache datapath show`.
use std::process::Command;

use aya::{
    maps::{HashMap, Map, MapData, MapInfo},
    programs::loaded_programs,
};
use serde::Serialize;
use serde_json::Value;
use velocache_common::xdp::{XDP_DISPATCHER, slots_in};

/// The XDP program on one interface.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct XdpAttachment {
    /// Its name (the kernel keeps the first 15 bytes).
    pub program: String,
    /// Its id (`bpftool prog show id …`).
    pub id: u32,
    /// `native`, `generic`, `offload` or `multi` (several programs in different modes).
    pub mode: String,
    /// Whether it is VeloCache's dispatcher.
    pub velocache_dispatcher: bool,
    /// The dispatcher's slots enabled on this interface, in chain order (empty for a program
    /// that is not ours).
    pub slots: Vec<String>,
}

/// The XDP program attached to `interface`, if any (and if `ip` can say).
pub fn inspect_xdp(interface: &str) -> Option<XdpAttachment> {
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", interface])
        .output()
        .ok()?;
    let link: Value = serde_json::from_slice(&out.stdout).ok()?;
    let link = &link[0];
    let ifindex = u32::try_from(link["ifindex"].as_u64()?).ok()?;
    let xdp = &link["xdp"];
    // One program: `xdp.prog`; several (one per mode): `xdp.attached[].prog`.
    let prog = if xdp["prog"].is_object() {
        &xdp["prog"]
    } else {
        &xdp["attached"][0]["prog"]
    };
    let id = u32::try_from(prog["id"].as_u64()?).ok()?;
    let program = prog["name"].as_str().unwrap_or("?").to_string();
    let mode = match xdp["mode"].as_u64() {
        Some(1) => "native",
        Some(2) => "generic",
        Some(3) => "offload",
        Some(4) => "multi",
        _ => "?",
    }
    .to_string();
    let velocache_dispatcher = program == XDP_DISPATCHER;
    let slots = if velocache_dispatcher {
        enabled_slots(id, ifindex)
            .map(|mask| slots_in(mask).map(|s| s.name().to_string()).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Some(XdpAttachment {
        program,
        id,
        mode,
        velocache_dispatcher,
        slots,
    })
}

/// The slot mask the dispatcher `prog_id` keeps for `ifindex`.
fn enabled_slots(prog_id: u32, ifindex: u32) -> Option<u32> {
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)?;
    for map_id in info.map_ids().ok()??.into_iter() {
        let is_masks = MapInfo::from_id(map_id)
            .ok()
            .is_some_and(|m| m.name_as_str() == Some("XDP_INTERFACES"));
        if is_masks {
            let map = MapData::from_id(map_id).ok()?;
            let masks: HashMap<MapData, u32, u32> = HashMap::try_from(Map::HashMap(map)).ok()?;
            // No entry: the dispatcher runs there with nothing enabled.
            return Some(masks.get(&ifindex, 0).unwrap_or(0));
        }
    }
    None
}
