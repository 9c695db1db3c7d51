//! One of the daemon's two fences of `unsafe` code (the other is `cache/disk/uring.rs`, for
//! io_uring submissions); the crate root denies `unsafe` everywhere else, so both can be
//! audited in one place each.
//!
//! Tokio made registering an arbitrary raw fd with its reactor `unsafe` (the caller must
//! promise the fd stays open and unchanged while registered). The kernel programs' log ring
//! buffer is such an fd, owned by aya-log's `EbpfLogger`.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use tokio::io::{Interest, unix::AsyncFd};

/// Register aya-log's ring buffer with the reactor for readability.
pub(super) fn async_kernel_logger<T: AsRawFd>(logger: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `EbpfLogger` owns its ring buffer's `OwnedFd` for its whole lifetime and returns
    // that same fd from every `as_raw_fd()` call; the `AsyncFd` takes ownership of the logger,
    // so the fd cannot be closed or replaced while it is registered.
    unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }.map_err(|e| e.into())
}
