//! Plugin manifests: what `[plugins] dir` holds and what each `plugin.toml` says.
//!
//! A directory enters [`discover`]; every plugin in it leaves as a [`Found`] — its manifest
//! file and either the parsed [`Manifest`] or the [`PluginError`] that names the file and what
//! is wrong with it, so one bad plugin is skipped while the others load. A plugin is either a
//! subdirectory holding `plugin.toml` (and the `.wasm` it names), as `cargo xtask plugins`
//! builds them, or a `NAME.toml` beside `NAME.wasm`. They run in the order of their names.
//!
//! ```toml
//! name = "dns-blocklist"
//! wasm = "dns-blocklist.wasm"      # relative to this file; default: NAME.wasm
//! hooks = ["dns"]                  # dns, http, sip, tcp
//! hosts = ["*.example", "ads.lab"] # DNS names / HTTP hosts / SIP domains it sees; empty: all
//! ports = []                       # TCP ports it claims (the tcp hook)
//! see_hits = false                 # DNS: also called for cache hits
//!
//! [config]                         # handed to the plugin by `host.config()`
//! names = ["ads.lab", "tracker.lab"]
//! ```
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::PluginError;
use crate::config::HostPattern;

/// A hook a plugin may implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// DNS queries, before the cache.
    Dns,
    /// HTTP requests (before the rules) and responses (before the cache stores them).
    Http,
    /// SIP messages.
    Sip,
    /// TCP streams on the ports it claims.
    Tcp,
}

impl Hook {
    /// Its name in manifests, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Dns => "dns",
            Hook::Http => "http",
            Hook::Sip => "sip",
            Hook::Tcp => "tcp",
        }
    }

    /// Every hook, in WIT order.
    pub const ALL: [Hook; 4] = [Hook::Dns, Hook::Http, Hook::Sip, Hook::Tcp];
}

/// `plugin.toml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    #[serde(default)]
    wasm: Option<PathBuf>,
    hooks: Vec<Hook>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    see_hits: bool,
    #[serde(default)]
    config: toml::Table,
}

/// A checked manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The plugin's name (logs, metrics, `plugins ls`).
    pub name: String,
    /// The manifest file.
    pub file: PathBuf,
    /// The component.
    pub wasm: PathBuf,
    /// The hooks it is called for.
    pub hooks: Vec<Hook>,
    /// The names or hosts it applies to (empty: all).
    pub hosts: Vec<HostPattern>,
    /// TCP ports it claims.
    pub ports: Vec<u16>,
    /// DNS: called for cache hits too.
    pub see_hits: bool,
    /// `[config]`, flattened to `key = value` pairs (sorted by key; nested tables as
    /// `a.b`; arrays one item a line).
    pub config: Vec<(String, String)>,
}

impl Manifest {
    /// Whether it applies to `host` (a DNS name, an HTTP host, a SIP domain).
    pub fn matches(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h.matches(host))
    }

    /// Whether it implements `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        self.hooks.contains(&hook)
    }

    /// Read and check the manifest in `file`.
    pub fn load(file: &Path) -> Result<Manifest, PluginError> {
        let text = std::fs::read_to_string(file).map_err(|e| bad(file, e.to_string()))?;
        Manifest::parse(&text, file)
    }

    /// Check the manifest `text`, read from `file` (paths are relative to its directory).
    pub fn parse(text: &str, file: &Path) -> Result<Manifest, PluginError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| bad(file, e.to_string()))?;
        let name = raw.name.trim().to_string();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(
                file,
                format!("name `{name}`: 1 to 64 letters, digits, `-` or `_`"),
            ));
        }
        if raw.hooks.is_empty() {
            return Err(bad(file, "hooks: name at least one of dns, http, sip, tcp"));
        }
        let mut hooks = raw.hooks.clone();
        hooks.sort_by_key(|h| Hook::ALL.iter().position(|x| x == h));
        hooks.dedup();
        let tcp = hooks.contains(&Hook::Tcp);
        if tcp && raw.ports.is_empty() {
            return Err(bad(file, "ports: the tcp hook needs the ports it claims"));
        }
        if !tcp && !raw.ports.is_empty() {
            return Err(bad(file, "ports: only the tcp hook claims ports"));
        }
        if raw.ports.contains(&0) {
            return Err(bad(file, "ports: 0 is not a port"));
        }
        if raw.see_hits && !hooks.contains(&Hook::Dns) {
            return Err(bad(file, "see_hits: only the dns hook sees cache hits"));
        }
        let hosts = raw
            .hosts
            .iter()
            .map(|h| HostPattern::new(h).map_err(|e| bad(file, format!("hosts: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let dir = file.parent().unwrap_or(Path::new("."));
        let wasm = dir.join(
            raw.wasm
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{name}.wasm"))),
        );
        let mut config = Vec::new();
        flatten("", &raw.config, &mut config);
        Ok(Manifest {
            name,
            file: file.to_path_buf(),
            wasm,
            hooks,
            hosts,
            ports: raw.ports,
            see_hits: raw.see_hits,
            config,
        })
    }
}

fn bad(file: &Path, reason: impl Into<String>) -> PluginError {
    PluginError::Manifest {
        file: file.to_path_buf(),
        reason: reason.into(),
    }
}

/// `[config]` as the `host.config()` pairs.
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, out),
            toml::Value::Array(items) => {
                let text: Vec<String> = items.iter().map(scalar).collect();
                out.push((key, text.join("\n")));
            }
            other => out.push((key, scalar(other))),
        }
    }
}

fn scalar(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One plugin found in the directory.
pub struct Found {
    /// Its manifest file.
    pub file: PathBuf,
    /// The manifest, or why it cannot be used.
    pub manifest: Result<Manifest, PluginError>,
}

/// Every plugin in `dir`, in the order of their names. A directory that does not exist holds
/// none; one that cannot be read is an error.
pub fn discover(dir: &Path) -> Result<Vec<Found>, PluginError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(PluginError::Dir {
                dir: dir.to_path_buf(),
                reason: e.to_string(),
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let manifest = path.join("plugin.toml");
            if manifest.is_file() {
                files.push(manifest);
            }
        } else if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|file| Found {
            manifest: Manifest::load(&file),
            file,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, PluginError> {
        Manifest::parse(text, Path::new("/p/x/plugin.toml"))
    }

    #[test]
    fn a_manifest_names_its_hooks_hosts_and_config() {
        let m = parse(
            "name = \"bl\"\nhooks = [\"dns\", \"http\"]\nhosts = [\"*.ads.lab\"]\nsee_hits = true\n\
             [config]\nnames = [\"a.lab\", \"b.lab\"]\nmode = \"nx\"\nlimit = 3\n[config.deep]\nx = true\n",
        )
        .unwrap();
        assert_eq!(m.name, "bl");
        assert_eq!(m.wasm, Path::new("/p/x/bl.wasm"));
        assert_eq!(m.hooks, vec![Hook::Dns, Hook::Http]);
        assert!(m.matches("x.ads.lab") && !m.matches("ads.example"));
        assert!(m.see_hits);
        assert_eq!(
            m.config,
            vec![
                ("deep.x".to_string(), "true".to_string()),
                ("limit".to_string(), "3".to_string()),
                ("mode".to_string(), "nx".to_string()),
                ("names".to_string(), "a.lab\nb.lab".to_string()),
            ]
        );
    }

    #[test]
    fn bad_manifests_name_the_file_and_the_reason() {
        let cases = [
            ("hooks = [\"dns\"]\n", "name"),
            ("name = \"a b\"\nhooks = [\"dns\"]\n", "name `a b`"),
            ("name = \"a\"\nhooks = []\n", "hooks"),
            ("name = \"a\"\nhooks = [\"ftp\"]\n", "unknown variant"),
            ("name = \"a\"\nhooks = [\"tcp\"]\n", "ports"),
            ("name = \"a\"\nhooks = [\"dns\"]\nports = [1080]\n", "ports"),
            (
                "name = \"a\"\nhooks = [\"http\"]\nsee_hits = true\n",
                "see_hits",
            ),
            (
                "name = \"a\"\nhooks = [\"dns\"]\nhosts = [\"a[\"]\n",
                "hosts",
            ),
            (
                "name = \"a\"\nhooks = [\"dns\"]\ncolour = 1\n",
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains("/p/x/plugin.toml"), "{err}");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_directory_holds_subdirectories_and_toml_pairs_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b-sub")).unwrap();
        std::fs::write(
            dir.path().join("b-sub/plugin.toml"),
            "name = \"b\"\nhooks = [\"dns\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.toml"),
            "name = \"a\"\nhooks = [\"http\"]\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("c.toml"), "not toml [").unwrap();
        std::fs::write(dir.path().join("a.wasm"), b"").unwrap();
        let found = discover(dir.path()).unwrap();
        let names: Vec<String> = found
            .iter()
            .map(|f| match &f.manifest {
                Ok(m) => m.name.clone(),
                Err(_) => "!".to_string(),
            })
            .collect();
        assert_eq!(names, ["a", "b", "!"]);
        assert_eq!(
            found[0].manifest.as_ref().unwrap().wasm,
            dir.path().join("a.wasm")
        );
        assert!(discover(&dir.path().join("absent")).unwrap().is_empty());
    }
}
