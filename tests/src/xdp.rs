//! Getting a lab ready for XDP programs that rewrite and redirect frames (DESIGN.md pitfalls).
//!
//! A frame an XDP program redirects into a veth is dropped unless the veth's peer can take
//! XDP frames: it needs an XDP program of its own or NAPI, which GRO turns on. Enabling GRO on
//! the receiving ends is the lighter of the two (no program to load in the client and origin
//! namespaces) and changes nothing else for UDP, which GRO does not coalesce without a socket
//! asking for it. TX checksum offload is switched off so that checksums a program updates
//! incrementally are complete ones, not partial sums the veth would finish later.
use crate::{Lab, addr};

/// Prepare every veth of `lab` for XDP redirection.
pub fn prepare_for_xdp(lab: &Lab) {
    lab.disable_tx_offload();
    for (ns, dev) in [
        (&lab.client, "eth0"),
        (&lab.gw, addr::LAN_IF),
        (&lab.gw, addr::WAN_IF),
        (&lab.origin, "eth0"),
    ] {
        ns.run_ok(&["ethtool", "-K", dev, "gro", "on"]);
    }
}

/// Whether an XDP program is attached to `dev` in `ns` (as `ip link` reports it).
pub fn xdp_attached(ns: &crate::Ns, dev: &str) -> bool {
    let out = ns.run_ok(&["ip", "-d", "link", "show", "dev", dev]);
    out.contains("prog/xdp") || out.contains(" xdp")
}

/// The id of the XDP program attached to `dev` in `ns`, if any.
pub fn xdp_prog_id(ns: &crate::Ns, dev: &str) -> Option<u64> {
    let out = ns.run_ok(&["ip", "-d", "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).ok()?;
    v[0]["xdp"]["prog"]["id"]
        .as_u64()
        .or_else(|| v[0]["xdp"]["attached"][0]["prog"]["id"].as_u64())
}

/// Entries in each map (by name) of the XDP programs `dev` in `ns` runs: the one attached (the
/// dispatcher) and those its program arrays hold (the slot programs). BPF maps are not
/// namespaced; going through the program this lab's interface runs keeps two labs apart.
pub fn xdp_map_entries(ns: &crate::Ns, dev: &str) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    let Some(id) = xdp_prog_id(ns, dev) else {
        return out;
    };
    let mut todo = vec![id];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let prog: serde_json::Value = serde_json::from_str(&ns.run_ok(&[
            "bpftool",
            "-j",
            "prog",
            "show",
            "id",
            &id.to_string(),
        ]))
        .unwrap_or_default();
        for map_id in prog["map_ids"].as_array().cloned().unwrap_or_default() {
            let map_id = map_id.as_u64().unwrap_or(0).to_string();
            let info: serde_json::Value =
                serde_json::from_str(&ns.run_ok(&["bpftool", "-j", "map", "show", "id", &map_id]))
                    .unwrap_or_default();
            // A ring buffer has no entries to dump (bpftool refuses it): counted as empty.
            let dump: serde_json::Value = if info["type"] == "ringbuf" {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&ns.run_ok(&["bpftool", "-j", "map", "dump", "id", &map_id]))
                    .unwrap_or_default()
            };
            let entries = dump.as_array().cloned().unwrap_or_default();
            if info["type"] == "prog_array" {
                // A program array's values are the ids of the programs in it.
                todo.extend(entries.iter().filter_map(|e| le_number(&e["value"])));
            }
            let name = info["name"].as_str().unwrap_or("?").to_string();
            out.insert(name, entries.len());
        }
    }
    out
}

/// bpftool prints a value without BTF as little-endian hex bytes (`["0x2a","0x00",…]`).
fn le_number(v: &serde_json::Value) -> Option<u64> {
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let mut n = 0u64;
    for (i, b) in v.as_array()?.iter().enumerate().take(8) {
        let b = u64::from_str_radix(b.as_str()?.trim_start_matches("0x"), 16).ok()?;
        n |= b << (8 * i);
    }
    Some(n)
}
