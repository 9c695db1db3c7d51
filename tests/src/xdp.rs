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
