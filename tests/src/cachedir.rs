//! Reading a daemon's HTTP cache directory as the disk store lays it out (see
//! `velocache/src/cache/disk/mod.rs`), to check it against what the daemon's index says
//! (`velocache cache ls --json`) and against the origin's bytes.
//!
//! ```text
//! cache_dir/tmp/…                           fills in progress
//! cache_dir/objects/<id[0..2]>/<id>/meta    JSON metadata (key, version, len, slice_bytes)
//! cache_dir/objects/<id[0..2]>/<id>/<ver>.<n>
//! ```
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// One object directory.
#[derive(Debug, Clone)]
pub struct StoredObject {
    /// Its directory.
    pub dir: PathBuf,
    /// The cache key from its metadata (`None`: no metadata file, or one that does not parse).
    pub key: Option<String>,
    /// Version (hex in slice names).
    pub version: u64,
    /// Body length, if known.
    pub len: Option<u64>,
    /// Slice size.
    pub slice_bytes: u64,
    /// The metadata's `ETag` header, if any.
    pub etag: Option<String>,
    /// Slices of the metadata's version: index → file size.
    pub slices: BTreeMap<u64, u64>,
    /// Files that are neither the metadata nor a slice of its version.
    pub strays: Vec<PathBuf>,
}

impl StoredObject {
    /// Expected size of slice `idx`.
    pub fn slice_len(&self, idx: u64) -> Option<u64> {
        let len = self.len?;
        let start = idx.checked_mul(self.slice_bytes)?;
        (start < len || (len == 0 && idx == 0)).then(|| (len - start).min(self.slice_bytes))
    }

    /// Path of slice `idx`.
    pub fn slice_path(&self, idx: u64) -> PathBuf {
        self.dir.join(format!("{:016x}.{idx}", self.version))
    }

    /// Whether every slice is there.
    pub fn complete(&self) -> bool {
        match (self.len, self.slice_bytes) {
            (Some(len), s) if s > 0 => self.slices.len() as u64 == len.div_ceil(s).max(1),
            _ => false,
        }
    }
}

/// Every object directory under `cache_dir/objects`.
pub fn objects(cache_dir: &Path) -> Vec<StoredObject> {
    let mut out = Vec::new();
    let Ok(prefixes) = std::fs::read_dir(cache_dir.join("objects")) else {
        return out;
    };
    for prefix in prefixes.flatten() {
        let Ok(dirs) = std::fs::read_dir(prefix.path()) else {
            continue;
        };
        for dir in dirs.flatten() {
            out.push(read_object(&dir.path()));
        }
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    out
}

fn read_object(dir: &Path) -> StoredObject {
    let meta: Option<Value> = std::fs::read(dir.join("meta"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let get_u64 = |k: &str| meta.as_ref().and_then(|m| m[k].as_u64());
    let etag = meta.as_ref().and_then(|m| {
        m["headers"].as_array()?.iter().find_map(|h| {
            let pair = h.as_array()?;
            (pair.first()?.as_str()? == "etag")
                .then(|| pair.get(1)?.as_str().map(str::to_string))?
        })
    });
    let mut obj = StoredObject {
        dir: dir.to_path_buf(),
        key: meta
            .as_ref()
            .and_then(|m| m["key"].as_str().map(str::to_string)),
        version: get_u64("version").unwrap_or(0),
        len: get_u64("len"),
        slice_bytes: get_u64("slice_bytes").unwrap_or(0),
        etag,
        slices: BTreeMap::new(),
        strays: Vec::new(),
    };
    let prefix = format!("{:016x}.", obj.version);
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name == "meta" {
            continue;
        }
        let idx = name
            .strip_prefix(&prefix)
            .and_then(|i| i.parse::<u64>().ok());
        match (idx, f.metadata()) {
            (Some(i), Ok(m)) if obj.key.is_some() => {
                obj.slices.insert(i, m.len());
            }
            _ => obj.strays.push(f.path()),
        }
    }
    obj
}

/// Files in `cache_dir/tmp` (fills in progress, or what a crash left before the next start).
pub fn tmp_files(cache_dir: &Path) -> usize {
    std::fs::read_dir(cache_dir.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Differences between the disk and the daemon's index (`velocache cache ls --json` output):
/// every object on disk must be listed with as many slices as it has files, every listed
/// object must be on disk, and no object may hold a stray or wrongly sized file. Empty when
/// they agree.
pub fn disagreements(cache_dir: &Path, listing: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut listed: BTreeMap<String, (u64, bool)> = BTreeMap::new();
    for e in listing["entries"].as_array().into_iter().flatten() {
        let key = e["key"]
            .as_str()
            .or_else(|| e["url"].as_str())
            .unwrap_or("")
            .to_string();
        let present = e["details"]["slices"]
            .as_str()
            .and_then(|s| s.split('/').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let complete = e["details"]["complete"] == "true";
        listed.insert(key, (present, complete));
    }
    if listing["total"].as_u64() != Some(listed.len() as u64) {
        problems.push(format!(
            "the listing was truncated ({} of {})",
            listed.len(),
            listing["total"]
        ));
    }
    let mut on_disk = BTreeMap::new();
    for o in objects(cache_dir) {
        let Some(key) = o.key.clone() else {
            problems.push(format!("{}: no readable metadata", o.dir.display()));
            continue;
        };
        for s in &o.strays {
            problems.push(format!("{}: stray file", s.display()));
        }
        for (&i, &size) in &o.slices {
            if Some(size) != o.slice_len(i) {
                problems.push(format!(
                    "{}: {size} bytes, expected {:?}",
                    o.slice_path(i).display(),
                    o.slice_len(i)
                ));
            }
        }
        match listed.get(&key) {
            None => problems.push(format!(
                "{key}: on disk ({}) but not in the index",
                o.dir.display()
            )),
            Some(&(present, complete)) => {
                if present != o.slices.len() as u64 {
                    problems.push(format!(
                        "{key}: the index has {present} slices, the disk {}",
                        o.slices.len()
                    ));
                }
                if complete != o.complete() {
                    problems.push(format!(
                        "{key}: the index says complete={complete}, the disk {}",
                        o.complete()
                    ));
                }
            }
        }
        on_disk.insert(key, ());
    }
    for key in listed.keys() {
        if !on_disk.contains_key(key) {
            problems.push(format!("{key}: in the index but not on disk"));
        }
    }
    problems
}
