//! Background processes that cannot outlive the test that started them.
use std::{
    fs::File,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// A child process with stdout and stderr captured to files. Dropping it kills it.
pub struct Background {
    child: Option<Child>,
    label: String,
    dir: TempDir,
}

impl Background {
    /// Spawn `cmd`, capturing its output.
    pub fn spawn(mut cmd: Command, label: &str) -> Background {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let out =
            File::create(dir.path().join("stdout")).unwrap_or_else(|e| panic!("stdout file: {e}"));
        let err =
            File::create(dir.path().join("stderr")).unwrap_or_else(|e| panic!("stderr file: {e}"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label}: {e}"));
        Background {
            child: Some(child),
            label: label.to_string(),
            dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Path of the captured stdout.
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout")
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Send `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal);
        }
    }

    /// Wait up to `limit` for the process to exit.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kill the process (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A label for messages.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}
