//! What the unit tests that need privileges share: one policy for a test that cannot run.
//!
//! Tests that load BPF programs or make network namespaces need root (the daemon does too).
//! Without it they fail at once, with a message that says how to run them — never return early
//! and pass with nothing checked. `cargo xtask test` runs every test as root.

/// Fail the calling test with a clear message unless the process runs as root. `what` says what
/// the test needs root for ("loading BPF programs", "a network namespace").
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root for {what}: run it as root (`cargo xtask test`, or `sudo -E cargo \
         test -p velocache --lib`); it fails rather than pass without checking anything"
    );
}
