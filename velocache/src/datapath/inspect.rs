//! What is attached to the interfaces, asked of the kernel (not of a running daemon), so an
//! operator can check a box before install, after a crash, or after uninstall: the TC ingress
//! classifier, and the XDP program (VeloCache's dispatcher and its enabled slots, `xdp`).
use std::process::Command;

use aya::programs::{SchedClassifier, TcAttachType};
use serde::Serialize;

use super::xdp::{XdpAttachment, inspect_xdp};

/// BPF program names are cut to 15 bytes by the kernel.
const KERNEL_NAME_PREFIX: &str = "velocache_lan_i";

/// The TC ingress programs on one interface.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InterfaceAttachments {
    /// Interface name.
    pub interface: String,
    /// Names of the TCX ingress programs, in order.
    pub tcx_ingress: Vec<String>,
    /// Whether a netlink (clsact) filter of ours is on the interface.
    pub netlink_classifier: bool,
    /// Whether VeloCache's classifier is attached either way.
    pub velocache_attached: bool,
    /// The XDP program on the interface: VeloCache's dispatcher (with the slots enabled there)
    /// or another one; `null` when there is none.
    pub xdp: Option<XdpAttachment>,
}

/// Inspect `interfaces` (every interface of this network namespace when empty).
pub fn inspect(interfaces: &[String]) -> Vec<InterfaceAttachments> {
    let names: Vec<String> = if interfaces.is_empty() {
        nix::net::if_::if_nameindex()
            .map(|list| {
                list.iter()
                    .map(|i| i.name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        interfaces.to_vec()
    };
    names
        .into_iter()
        .map(|interface| {
            let tcx_ingress: Vec<String> =
                match SchedClassifier::query_tcx(&interface, TcAttachType::Ingress) {
                    Ok((_, progs)) => progs
                        .iter()
                        .map(|p| p.name_as_str().unwrap_or("?").to_string())
                        .collect(),
                    Err(_) => Vec::new(),
                };
            // aya has no netlink filter query; `tc` prints the program name of bpf filters.
            let netlink_classifier = Command::new("tc")
                .args(["filter", "show", "dev", &interface, "ingress"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(KERNEL_NAME_PREFIX))
                .unwrap_or(false);
            let velocache_attached = netlink_classifier
                || tcx_ingress
                    .iter()
                    .any(|n| n.starts_with(KERNEL_NAME_PREFIX));
            let xdp = inspect_xdp(&interface);
            InterfaceAttachments {
                interface,
                tcx_ingress,
                netlink_classifier,
                velocache_attached,
                xdp,
            }
        })
        .collect()
}
