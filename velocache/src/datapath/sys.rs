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

/// Register aya's TLS event ring buffer with the reactor for readability.
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
