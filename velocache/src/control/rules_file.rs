//! The rules file on disk, as the rule editor changes it: read, hash, atomic replace, and the
//! previous content kept beside it for undo.
//!
//! The file stays the source of truth: apply writes it and the daemon then reloads it exactly
//! as `rules reload` does. A write goes to a temporary file in the same directory (same file
//! system), is flushed to disk with the old file's mode and owner, and renamed over the file, so
//! a reader (or a crash) sees the old file or the new one, never half of one; the directory is
//! flushed after. The previous content goes to `<file>.prev` the same way, before the file
//! itself. A rules file that is a symbolic link is written where the link points.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// A rules file operation that failed.
#[derive(Debug, Error)]
pub(crate) enum RulesFileError {
    /// Reading, writing, renaming or syncing failed.
    #[error("cannot {action} {}: {source}{}", path.display(), hint(source))]
    Io {
        /// What was being done (`write`, `rename into place`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A word on the likely cause, for errors an operator can fix.
fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ReadOnlyFilesystem => {
            " (the daemon sees it read-only: under systemd's ProtectSystem=strict, list its directory in ReadWritePaths=)"
        }
        io::ErrorKind::PermissionDenied => " (the daemon may not write there)",
        _ => "",
    }
}

fn io_err<'p>(
    action: &'static str,
    path: &'p Path,
) -> impl FnOnce(io::Error) -> RulesFileError + 'p {
    move |source| RulesFileError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 of `text`, hex.
pub(crate) fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Where the file really is: the target of a symbolic link, else the path itself.
pub(crate) fn real_path(file: &Path) -> PathBuf {
    fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf())
}

/// Where the previous content of `real` is kept.
pub(crate) fn prev_path(real: &Path) -> PathBuf {
    let mut name = real.file_name().unwrap_or_default().to_os_string();
    name.push(".prev");
    real.with_file_name(name)
}

/// The text of `path`, or `None` when there is no such file.
pub(crate) fn read(path: &Path) -> Result<Option<String>, RulesFileError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

/// Remove `path` if it exists.
pub(crate) fn remove(path: &Path) -> Result<(), RulesFileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Replace `path` with `text` atomically, with the mode and owner of `like` (the rules file
/// itself, also for `<file>.prev`: a copy is as private as the file), else of `path`, else 0644
/// as the packaged rules file has.
pub(crate) fn write_atomic(path: &Path, text: &str, like: &Path) -> Result<(), RulesFileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let old = fs::metadata(like).or_else(|_| fs::metadata(path)).ok();
    let mode = old
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        f.write_all(text.as_bytes())
            .map_err(io_err("write", &tmp))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("set the mode of", &tmp))?;
        if let Some(m) = &old {
            // Keeping the owner needs the right to give files away (root); otherwise the file
            // is ours, which is what writing it means anyway.
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.sync_all().map_err(io_err("flush", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("flush the directory", &dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_text_and_keeps_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        fs::write(&file, "old\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&file, "new\n", &file).unwrap();
        assert_eq!(fs::read_to_string(&file).unwrap(), "new\n");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_write_that_cannot_happen_leaves_the_old_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        fs::write(&file, "old\n").unwrap();
        // The rename target is a directory: the rename fails after the temporary file is
        // written.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("x"), "").unwrap();
        let e = write_atomic(&blocked, "new\n", &blocked).unwrap_err();
        assert!(e.to_string().contains("rename into place"), "{e}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "old\n");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn a_symlinked_rules_file_is_written_where_it_points() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.toml");
        fs::write(&target, "old\n").unwrap();
        let link = dir.path().join("rules.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let real = real_path(&link);
        write_atomic(&real, "new\n", &real).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&link).unwrap(), "new\n");
        assert_eq!(prev_path(&real), dir.path().join("real.toml.prev"));
    }

    #[test]
    fn the_previous_copy_is_as_private_as_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rules.toml");
        fs::write(&file, "old\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let prev = prev_path(&file);
        write_atomic(&prev, "old\n", &file).unwrap();
        assert_eq!(
            fs::metadata(&prev).unwrap().permissions().mode() & 0o7777,
            0o600
        );
    }
}
