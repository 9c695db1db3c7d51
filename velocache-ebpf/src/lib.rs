//! Library target so that `velocache/build.rs` can declare a build-dependency on this crate and
//! cargo knows to rebuild the daemon when the kernel programs change. The programs themselves
//! live in the binary targets: `velocache` (`src/main.rs`, the LAN classifier) and
//! `velocache-xdp` (`src/xdp/main.rs`, the XDP dispatcher and its slot programs).
#![no_std]
