//! Holding a killed process in its exit, to test what its successor does meanwhile.
//!
//! A process frozen by the cgroup v1 freezer stays frozen when SIGKILL arrives: the signal is
//! pending (`ShdPnd`) and the process exits only once thawed — the state of a daemon whose
//! threads are still finishing I/O after `kill -9`, made as long as a test needs. (The cgroup v2
//! freezer lets fatal signals through, so it cannot do this.)
use std::path::PathBuf;

/// A freezer cgroup of its own, removed (after thawing) on drop.
pub struct Freezer {
    dir: PathBuf,
}

const ROOT: &str = "/sys/fs/cgroup/freezer";

impl Freezer {
    /// A new freezer cgroup. Panics with a clear message where the v1 freezer is not mounted.
    pub fn new() -> Freezer {
        let root = std::path::Path::new(ROOT);
        assert!(
            root.join("cgroup.procs").exists(),
            "this test needs the cgroup v1 freezer at {ROOT} (to hold a killed daemon in its exit)"
        );
        let dir = root.join(format!(
            "velocache-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Freezer { dir }
    }

    /// Move process `pid` (all its threads) into the cgroup.
    pub fn add(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string());
    }

    /// Freeze everything in it and wait until it is frozen.
    pub fn freeze(&self) {
        self.write("freezer.state", "FROZEN");
        for _ in 0..500 {
            if self.state() == "FROZEN" {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the freezer cgroup did not freeze: {}", self.state());
    }

    /// Let it run again.
    pub fn thaw(&self) {
        self.write("freezer.state", "THAWED");
    }

    fn state(&self) -> String {
        std::fs::read_to_string(self.dir.join("freezer.state"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Default for Freezer {
    fn default() -> Self {
        Freezer::new()
    }
}

impl Drop for Freezer {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
        // Processes leave it as they exit; give them a moment before removing the cgroup.
        for _ in 0..200 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}
