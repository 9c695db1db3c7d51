//! `[datapath]`: kernel programs, interfaces, bypass lists, policy routing, and what every
//! pass-through flow shares (UDP session idle time, connect timeout).
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Invalid, Millis, Secs, values::check_interface_names};

/// `[datapath]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatapathConfig {
    /// LAN interfaces the classifier is attached to. Empty: nothing is intercepted.
    pub lan_interfaces: Vec<String>,
    /// Client prefixes never intercepted.
    pub bypass_clients: Vec<IpNet>,
    /// Destination prefixes never intercepted.
    pub bypass_destinations: Vec<IpNet>,
    /// Also intercept packets addressed to the gateway's own addresses (off: a service running on
    /// the gateway itself keeps its clients).
    pub intercept_gateway_addresses: bool,
    /// Mark the classifier sets on steered packets.
    pub mark: u32,
    /// Routing table holding the `local` default routes for marked packets.
    pub route_table: u32,
    /// Priority of the `fwmark` policy rule.
    pub rule_priority: u32,
    /// `auto` (TCX where the kernel has it), `tcx` or `netlink` (clsact).
    pub attach: AttachMode,
    /// A UDP pass-through session with no datagram for this long is closed and logged.
    pub udp_idle_timeout_secs: Secs,
    /// How long the gateway waits for an original destination to accept a connection it
    /// splices or relays (pass-through, TLS splices, SIP over TCP).
    pub connect_timeout_ms: Millis,
    /// Insert `meta mark <mark> accept` first in every nftables input chain (iptables-nft's
    /// INPUT included), so a router whose input policy drops does not drop steered packets.
    pub firewall_accept: bool,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        DatapathConfig {
            lan_interfaces: Vec::new(),
            bypass_clients: Vec::new(),
            bypass_destinations: Vec::new(),
            intercept_gateway_addresses: false,
            mark: 0x5643,
            route_table: 0x5643,
            rule_priority: 90,
            attach: AttachMode::Auto,
            udp_idle_timeout_secs: Secs(30),
            connect_timeout_ms: Millis(10_000),
            firewall_accept: true,
        }
    }
}

impl DatapathConfig {
    /// The `[datapath]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.mark == 0 {
            return Err(Invalid::new("datapath.mark", "must not be 0"));
        }
        // 253..=255 are the kernel's default, main and local tables.
        if self.route_table == 0 || (253..=255).contains(&self.route_table) {
            return Err(Invalid::new(
                "datapath.route_table",
                "must not be 0 or a reserved table (253 default, 254 main, 255 local)",
            ));
        }
        if self.rule_priority == 0 {
            return Err(Invalid::new(
                "datapath.rule_priority",
                "0 is the kernel's `local` rule; choose 1..32765",
            ));
        }
        check_interface_names("datapath.lan_interfaces", &self.lan_interfaces)?;
        self.udp_idle_timeout_secs
            .at_least_one("datapath.udp_idle_timeout_secs")?;
        self.connect_timeout_ms
            .at_least_one("datapath.connect_timeout_ms")?;
        Ok(())
    }
}

/// How the classifier is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// TCX links where the kernel supports them (≥ 6.6), netlink clsact otherwise.
    Auto,
    /// TCX links only.
    Tcx,
    /// Netlink `cls_bpf` on a clsact qdisc.
    Netlink,
}
