//! The kernel side of TLS observation as the datapath sees it: loading the ClientHello reader
//! into the classifier's tail-call slot, and attaching the LAN egress counter next to the
//! classifier on each LAN interface.
//!
//! Both programs live in the classifier's object and share its maps. The reader is loaded and
//! put into `TLS_PROGS` before the classifier is attached, so the first observed ClientHello
//! already finds it. The egress program follows the classifier's attachment mode (TCX or
//! netlink) and, like it, is detached by [`super::Datapath::stop`]; observation stays off
//! (`TLS_OBSERVE`) until the daemon's observer has filled its maps
//! (`crate::observe::Observer`), so until then every TLS flow is steered as before.
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, ProgramArray, RingBuf, lpm_trie::LpmTrie},
    programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType, tc},
};
use tokio::io::unix::AsyncFd;
use tracing::info;
use velocache_common::tls::{
    EGRESS_PROGRAM, HELLO_PROGRAM, ObserveConfig, ObservedFlow, SniKey, SniPolicy, SteerEntry,
    TlsFlowKey,
};

use super::DatapathError;

fn program_error(name: &'static str) -> impl Fn(ProgramError) -> DatapathError {
    move |source| DatapathError::Program { name, source }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::Program {
            name,
            source: ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(program_error(name))
}

/// Load (verify) the reader and the egress counter; put the reader into `TLS_PROGS[0]`.
pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let hello = classifier(ebpf, HELLO_PROGRAM)?;
    hello.load().map_err(program_error(HELLO_PROGRAM))?;
    let fd = hello
        .fd()
        .map_err(program_error(HELLO_PROGRAM))?
        .try_clone()
        .map_err(|e| DatapathError::Map {
            name: "TLS_PROGS",
            reason: e.to_string(),
        })?;
    let map = ebpf.map_mut("TLS_PROGS").ok_or(DatapathError::Map {
        name: "TLS_PROGS",
        reason: "missing from the object".into(),
    })?;
    let mut progs = ProgramArray::try_from(map).map_err(|e| DatapathError::Map {
        name: "TLS_PROGS",
        reason: e.to_string(),
    })?;
    progs.set(0, &fd, 0).map_err(|e| DatapathError::Map {
        name: "TLS_PROGS",
        reason: e.to_string(),
    })?;
    classifier(ebpf, EGRESS_PROGRAM)?
        .load()
        .map_err(program_error(EGRESS_PROGRAM))
}

/// Attach the egress counter to `iface` the way the classifier was (TCX or netlink; the clsact
/// qdisc the classifier needed is there already).
pub(super) fn attach_egress(ebpf: &mut Ebpf, iface: &str, tcx: bool) -> Result<(), DatapathError> {
    let options = if tcx {
        tc::TcAttachOptions::TcxOrder(LinkOrder::default())
    } else {
        tc::TcAttachOptions::Netlink(tc::NlOptions::default())
    };
    // A netlink filter left by a daemon killed earlier would count in front of ours.
    if tc::qdisc_detach_program(iface, TcAttachType::Egress, EGRESS_PROGRAM).is_ok() {
        info!(
            interface = iface,
            "removed an egress counter left by a previous daemon"
        );
    }
    classifier(ebpf, EGRESS_PROGRAM)?
        .attach_with_options(iface, TcAttachType::Egress, options)
        .map_err(|source| DatapathError::Attach {
            interface: iface.to_string(),
            source,
        })?;
    Ok(())
}

/// Detach the egress counter from every interface (dropping its links).
pub(super) fn unload(ebpf: &mut Ebpf) -> Result<(), ProgramError> {
    classifier(ebpf, EGRESS_PROGRAM)
        .map_err(|_| ProgramError::UnexpectedProgramType)?
        .unload()
}

/// The observation maps the daemon reads and fills, taken out of the object once the
/// datapath is up (see [`super::Datapath::take_tls`]).
pub struct TlsMaps {
    /// Observed flows (`TLS_FLOWS`).
    pub flows: HashMap<MapData, TlsFlowKey, ObservedFlow>,
    /// Learned IPv4 destinations (`TLS_STEER_V4`).
    pub steer_v4: HashMap<MapData, [u8; 4], SteerEntry>,
    /// Learned IPv6 destinations (`TLS_STEER_V6`).
    pub steer_v6: HashMap<MapData, [u8; 16], SteerEntry>,
    /// Operator prefixes, IPv4 (`TLS_STEER_PREFIX_V4`).
    pub prefixes_v4: LpmTrie<MapData, [u8; 4], u32>,
    /// Operator prefixes, IPv6 (`TLS_STEER_PREFIX_V6`).
    pub prefixes_v6: LpmTrie<MapData, [u8; 16], u32>,
    /// The SNI policy (`TLS_SNI_POLICY`).
    pub policy: HashMap<MapData, SniKey, SniPolicy>,
    /// The switch (`TLS_OBSERVE`).
    pub switch: Array<MapData, ObserveConfig>,
}

/// The TLS event ring buffer, registered with the reactor.
pub struct TlsEvents {
    ring: AsyncFd<RingBuf<MapData>>,
}

impl TlsEvents {
    /// Wait until events are there, then hand each record's bytes to `f` (in order).
    pub async fn drain(&mut self, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
        let mut guard = self.ring.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            f(&item);
        }
        guard.clear_ready();
        Ok(())
    }
}

fn take<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, DatapathError>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::Map {
        name,
        reason: "missing from the object".into(),
    })?;
    M::try_from(map).map_err(|e| DatapathError::Map {
        name,
        reason: e.to_string(),
    })
}

/// Take the observation maps and the event ring buffer out of the object.
pub(super) fn take_maps(ebpf: &mut Ebpf) -> Result<(TlsMaps, TlsEvents), DatapathError> {
    let maps = TlsMaps {
        flows: take(ebpf, "TLS_FLOWS")?,
        steer_v4: take(ebpf, "TLS_STEER_V4")?,
        steer_v6: take(ebpf, "TLS_STEER_V6")?,
        prefixes_v4: take(ebpf, "TLS_STEER_PREFIX_V4")?,
        prefixes_v6: take(ebpf, "TLS_STEER_PREFIX_V6")?,
        policy: take(ebpf, "TLS_SNI_POLICY")?,
        switch: take(ebpf, "TLS_OBSERVE")?,
    };
    let ring: RingBuf<MapData> = take(ebpf, "TLS_EVENTS")?;
    let ring = super::sys::async_ring_buf(ring).map_err(|e| DatapathError::Map {
        name: "TLS_EVENTS",
        reason: format!("cannot poll it: {e}"),
    })?;
    Ok((maps, TlsEvents { ring }))
}
