//! Library target so that `velocache/build.rs` can declare a build-dependency on this crate and
//! cargo knows to rebuild the daemon when the kernel programs change. The programs themselves
//! live in the `velocache` binary target (`src/main.rs`).
#![no_std]
