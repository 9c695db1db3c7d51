//! The HTTP object cache: storage behind a trait, RFC 9111 decisions, collapsed forwarding.
//!
//! Data enters as origin responses (metadata + a body stream) that a [`fill::FillJob`] cuts
//! into fixed-size slices and commits to a [`Storage`]; it leaves through an
//! [`reader::ObjectReader`] that reads committed slices, follows fills in progress (the growing
//! file), and asks for missing slices to be fetched. What may be stored and served is decided
//! by the pure functions of [`policy`] over [`cache_control`] and [`range`] parsing; the key of
//! a request comes from [`key`]. A committed slice of the disk store can also leave as a
//! [`FileRegion`] (descriptor, offset, length) for a response to send with `sendfile`/`splice`.
//! The HTTP proxy (`crate::http`) drives all of it through the [`Storage`] and
//! [`lock::CacheLock`] traits and never sees io_uring: the disk backend's ring thread lives in
//! [`disk`].
//!
//! # Layout
//! - `key`: cache keys and object ids (content-addressed keys, query normalisation).
//! - `meta`: what is stored about a response, and its on-disk form.
//! - `cache_control`, `range`, `policy`: RFC 9110/9111 parsing and decisions.
//! - `storage`: the [`Storage`] trait; `memory` and `disk` implement it; `index` is their
//!   shared bookkeeping (slices, bytes, LRU eviction).
//! - `lock`: the [`lock::CacheLock`] seam — one writer per object, readers with lock-age and wait
//!   timeouts — and its in-process implementation.
//! - `fill`, `reader`: body in, body out.
//!   `handoff`: the body of a fill that could not store, passed to the reader that relays it.
//! - `shared`: the second tier on a Redis Cluster shared by several gateways (a [`Storage`]
//!   and a [`lock::CacheLock`] over the local ones).

pub mod cache_control;
pub mod disk;
pub mod fill;
mod handoff;
mod index;
pub mod key;
pub mod lock;
mod memory;
pub mod meta;
pub mod policy;
pub mod range;
pub mod reader;
pub mod shared;
mod storage;

#[cfg(test)]
mod storage_tests;

use std::path::PathBuf;

use thiserror::Error;

pub use disk::DiskStorage;
pub use key::{KeyInput, ObjectId, ObjectKey};
pub use memory::MemoryStorage;
pub use meta::ObjectMeta;
pub use storage::{
    FileRegion, Hit, IoFuture, Lookup, SliceReader, SliceSet, SliceWriter, Step, Storage, Usage,
};

/// What can go wrong in the cache layer.
#[derive(Debug, Error)]
pub enum CacheError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A slice or body did not have the length it must have.
    #[error("{what} length {got}, expected {expected}")]
    Length {
        /// Slice or body.
        what: &'static str,
        /// Expected bytes.
        expected: u64,
        /// Bytes seen.
        got: u64,
    },
    /// A content-addressed object did not match its digest.
    #[error("content of {key} does not match its digest")]
    Digest {
        /// Key text.
        key: String,
    },
    /// The object grew past the per-object limit.
    #[error("object larger than max_object_bytes ({limit})")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The origin's body failed.
    #[error("origin: {0}")]
    Origin(String),
    /// A fill made no progress for the waiter timeout.
    #[error("the fill made no progress for {waited_ms} ms")]
    Stalled {
        /// How long the reader waited.
        waited_ms: u64,
    },
    /// A slice expected in the store is not there and could not be fetched.
    #[error("slice {slice} is missing")]
    Missing {
        /// The slice.
        slice: u64,
    },
    /// The object was removed (or replaced) while a fill was writing it: what the fill would
    /// store could never be served, so it relays instead.
    #[error("the object was removed from the cache while being filled")]
    Removed,
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}
