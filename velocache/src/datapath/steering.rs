//! The daemon's side of the kernel's own socket lookups: the `sk_lookup` program attached to
//! this network namespace, and the daemon's sockets in its `LISTENERS` map.
//!
//! The classifier assigns most packets to a socket itself. Twice the kernel decides after it:
//! a SYN that reuses a tuple a closing daemon socket still holds (`TCP_TW_SYN`: the kernel looks
//! for a listener on the original destination), and a fragmented datagram, reassembled after the
//! classifier ran (reassembly drops the assigned socket). The classifier leaves those tuples in
//! `STEERED`; the program answers the kernel's lookup for them with the socket in the slot the
//! entry names. Data enters as [`DaemonSocket`]s (duplicated descriptors of the bound listeners)
//! and leaves as map entries; the kernel removes an entry when its socket closes, so a stopped
//! or crashed daemon leaves no socket behind to be handed traffic.
use std::os::fd::OwnedFd;

use aya::{
    Ebpf,
    maps::SockMap,
    programs::{ProgramError, SkLookup},
};
use velocache_common::{
    IPPROTO_TCP, IPPROTO_UDP, Service,
    steer::{SK_LOOKUP_PROGRAM, listener_slot},
};

use super::DatapathError;
use crate::config::Transport;

/// One of the daemon's bound sockets, for the `LISTENERS` map.
#[derive(Debug)]
pub struct DaemonSocket {
    /// The service it serves.
    pub service: Service,
    /// TCP listener or UDP receiving socket.
    pub transport: Transport,
    /// Bound to the IPv6 wildcard address (else IPv4).
    pub v6: bool,
    /// A duplicate of its descriptor: the map keeps the socket, not the descriptor, so the
    /// duplicate is closed once inserted.
    pub fd: OwnedFd,
}

fn program_err(source: ProgramError) -> DatapathError {
    DatapathError::Program {
        name: SK_LOOKUP_PROGRAM,
        source,
    }
}

fn program(ebpf: &mut Ebpf) -> Result<&mut SkLookup, DatapathError> {
    ebpf.program_mut(SK_LOOKUP_PROGRAM)
        .ok_or(program_err(ProgramError::UnexpectedProgramType))?
        .try_into()
        .map_err(program_err)
}

/// Load (verify) the `sk_lookup` program without attaching it.
pub(super) fn load(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    program(ebpf)?.load().map_err(program_err)
}

/// Put the daemon's sockets into `LISTENERS`.
pub(super) fn register(ebpf: &mut Ebpf, sockets: Vec<DaemonSocket>) -> Result<(), DatapathError> {
    let map = ebpf.map_mut("LISTENERS").ok_or(DatapathError::Map {
        name: "LISTENERS",
        reason: "missing from the object".into(),
    })?;
    let mut listeners: SockMap<&mut aya::maps::MapData> =
        SockMap::try_from(map).map_err(|e| DatapathError::Map {
            name: "LISTENERS",
            reason: e.to_string(),
        })?;
    for s in sockets {
        let proto = match s.transport {
            Transport::Tcp => IPPROTO_TCP,
            Transport::Udp => IPPROTO_UDP,
        };
        let slot = listener_slot(s.service as u32, proto, s.v6);
        listeners
            .set(slot, &s.fd, 0)
            .map_err(|e| DatapathError::Map {
                name: "LISTENERS",
                reason: format!(
                    "{} {:?} socket (IPv{}): {e}",
                    s.service.name(),
                    s.transport,
                    if s.v6 { 6 } else { 4 }
                ),
            })?;
    }
    Ok(())
}

/// Attach the `sk_lookup` program to the daemon's network namespace. The link lives as long as
/// the program (dropping the `Ebpf` or unloading detaches it; so does the daemon's death).
pub(super) fn attach(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let netns = std::fs::File::open("/proc/thread-self/ns/net").map_err(|e| {
        program_err(ProgramError::IOError(std::io::Error::new(
            e.kind(),
            format!("opening this thread's network namespace: {e}"),
        )))
    })?;
    program(ebpf)?.attach(netns).map_err(program_err)?;
    Ok(())
}

/// Detach the `sk_lookup` program.
pub(super) fn detach(ebpf: &mut Ebpf) {
    if let Ok(p) = program(ebpf)
        && let Err(e) = p.unload()
    {
        tracing::warn!(error = %e, "unloading the sk_lookup program failed");
    }
}
