//! The WebAssembly plugins `cargo xtask plugins` builds (`target/plugins/NAME/`), installed into
//! a daemon's `[plugins] dir` the way an operator would: the component and a `plugin.toml`.
use std::path::{Path, PathBuf};

/// Where the built plugins are: `VELOCACHE_PLUGINS` (set by `cargo xtask test`), else the
/// workspace's `target/plugins`. Panics, saying how to build them, when they are not there.
pub fn built() -> PathBuf {
    let dir = std::env::var_os("VELOCACHE_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("plugins")
        });
    if !dir.join("noop").join("noop.wasm").is_file() {
        panic!(
            "no built plugins under {}: run `cargo xtask plugins` (or `cargo xtask test`)",
            dir.display()
        );
    }
    dir
}

/// Install the built plugin `name` into `plugins_dir` as `as_name/`, with `manifest` as its
/// `plugin.toml` (its `name` and `wasm` are the caller's to write; the component is copied as
/// `<as_name>.wasm`). Returns the plugin's directory.
pub fn install(plugins_dir: &Path, name: &str, as_name: &str, manifest: &str) -> PathBuf {
    let src = built().join(name).join(format!("{name}.wasm"));
    let dir = plugins_dir.join(as_name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    std::fs::copy(&src, dir.join(format!("{as_name}.wasm")))
        .unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
    std::fs::write(dir.join("plugin.toml"), manifest)
        .unwrap_or_else(|e| panic!("writing {as_name}'s manifest: {e}"));
    dir
}
