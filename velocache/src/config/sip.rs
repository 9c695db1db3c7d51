//! `[sip]`: SIP interception (UDP and TCP 5060), call observation, the RTP fast path and
//! media anchoring.
use std::path::PathBuf;

use super::{Invalid, Secs, intercept::service_section, values::check_interface_names};

service_section!(
    /// `[sip]`
    SipConfig, Sip, [Udp, Tcp], 5060, 15060, {
        /// Relay learned RTP/RTCP flows in the kernel (XDP) instead of the stack.
        media_fast_path: bool = true,
        /// Interfaces the RTP fast path is attached to. Empty: `[datapath] lan_interfaces`
        /// only (then media from the WAN side is forwarded by the stack). List the WAN side too.
        media_interfaces: Vec<String> = Vec::new(),
        /// Media anchoring for NAT'd clients: SDP addresses become gateway ports from the range
        /// below, and the kernel rewrites RTP/RTCP to the real peer (rtpengine's job).
        anchor_media: bool = false,
        /// First port of the anchoring range (even; RTP on even ports, RTCP on the next one).
        anchor_port_min: u16 = 30000,
        /// Last port of the anchoring range.
        anchor_port_max: u16 = 39999,
        /// A call whose media flows all saw no packet for this long is ended (`rtp_timeout`)
        /// and its kernel flows removed.
        rtp_idle_timeout_secs: Secs = Secs(30),
        /// An INVITE that gets no final answer for this long is dropped from the call table.
        setup_timeout_secs: Secs = Secs(180),
        /// Calls tracked at once; beyond it new calls are forwarded but not recorded.
        max_calls: usize = 10_000,
        /// bpffs directory where the fast path's maps are pinned so learned flows survive a
        /// daemon restart. Not on bpffs: no pinning (flows die with the daemon).
        pin_dir: PathBuf = PathBuf::from("/sys/fs/bpf/velocache"),
    }
);

impl SipConfig {
    /// The `[sip]` checks.
    pub fn check(&self) -> Result<(), Invalid> {
        if self.anchor_port_min == 0
            || !self.anchor_port_min.is_multiple_of(2)
            || self.anchor_port_max <= self.anchor_port_min
        {
            return Err(Invalid::new(
                "sip.anchor_port_min",
                "must be an even, non-zero port below `anchor_port_max`",
            ));
        }
        self.rtp_idle_timeout_secs
            .at_least_one("sip.rtp_idle_timeout_secs")?;
        self.setup_timeout_secs
            .at_least_one("sip.setup_timeout_secs")?;
        check_interface_names("sip.media_interfaces", &self.media_interfaces)
    }
}
