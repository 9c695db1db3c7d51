//! One of the daemon's two fences of `unsafe` code (the other is `cache/disk/uring.rs`, for
//! io_uring submissions); the crate root denies `unsafe` everywhere else, so both can be
//! audited in one place each.
//!
//! Tokio made registering an arbitrary raw fd with its reactor `unsafe` (the caller must
//! promise the fd stays open and unchanged while registered). The kernel programs' log ring
//! buffer is such an fd, owned by aya-log's `EbpfLogger`; so is the TLS observation ring buffer,
//! owned by aya's `RingBuf`.
//!
//! Two socket options no safe wrapper offers are read here too: `SO_COOKIE` (the key of the
//! kernel relay's socket map) and the bytes a TCP socket has taken to send (`TCP_INFO`'s
//! `tcpi_bytes_acked` plus `SIOCOUTQ`), with which the relay knows its redirected bytes are
//! all queued before it passes a half-close on.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

use tokio::io::{Interest, unix::AsyncFd};

/// Register aya-log's ring buffer with the reactor for readability.
pub(super) fn async_kernel_logger<T: AsRawFd>(logger: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `EbpfLogger` owns its ring buffer's `OwnedFd` for its whole lifetime and returns
    // that same fd from every `as_raw_fd()` call; the `AsyncFd` takes ownership of the logger,
    // so the fd cannot be closed or replaced while it is registered.
    unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }.map_err(|e| e.into())
}

/// Register one of aya's ring buffers (TLS events, RTP capture copies) with the reactor for
/// readability.
pub(crate) fn async_ring_buf<T: AsRawFd>(ring: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: aya's `RingBuf` owns its map (and the map its `OwnedFd`) for its whole lifetime and
    // returns that same fd from every `as_raw_fd()`; the `AsyncFd` takes ownership of the ring
    // buffer, so the fd cannot be closed or replaced while it is registered.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| e.into())
}

/// The socket's cookie (`SO_COOKIE`): a number the kernel gives each socket, never reused.
pub(crate) fn socket_cookie(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor for the call; the kernel writes at most `len` bytes into
    // `cookie`, whose size `len` states.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Bytes a connected TCP socket has been given to send since it connected: acknowledged
/// (`tcpi_bytes_acked`) plus still queued (`SIOCOUTQ`).
pub(crate) fn tcp_bytes_taken(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    // SAFETY: `tcp_info` is plain integers; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: as above; the kernel writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (the same request number as TIOCOUTQ) writes one int.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &raw mut queued) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(info.tcpi_bytes_acked + queued.max(0) as u64)
}

/// The driver behind interface `name` (`ethtool -i`'s `driver`, e.g. `veth`), read with the
/// `SIOCETHTOOL` / `ETHTOOL_GDRVINFO` ioctl.
pub fn interface_driver(name: &str) -> std::io::Result<String> {
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 3;
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    // SAFETY: an all-zero `ifreq` is valid (a name and a null union).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = (&mut info as *mut DrvInfo).cast();
    // SAFETY: SIOCETHTOOL reads `ifr` (a NUL-terminated name, checked to fit) and writes only
    // into `info`, which outlives the call and has the kernel's `ethtool_drvinfo` layout.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}
