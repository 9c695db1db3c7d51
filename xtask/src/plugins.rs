//! `cargo xtask plugins`: build the example and test plugins in `plugins/` into components
//! ready for `[plugins] dir`.
//!
//! Every member of the `plugins/` workspace is built in release for `wasm32-unknown-unknown`
//! (no WASI: the only imports a guest can have are the WIT's `host` functions); its core module
//! — which carries the WIT world wit-bindgen embedded — becomes a component with
//! `wit-component`, and lands as `target/plugins/NAME/NAME.wasm` beside a copy of the crate's
//! `plugin.toml`. The lab tests and the plugin benchmark install from there.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// The target guests are built for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// Where the built plugins land.
pub fn out_dir() -> PathBuf {
    util::root().join("target").join("plugins")
}

/// The members of the guest workspace (each a directory with a `Cargo.toml`).
fn members(workspace: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in
        std::fs::read_dir(workspace).with_context(|| format!("reading {}", workspace.display()))?
    {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Build every plugin; returns the directory holding them.
pub fn build() -> Result<PathBuf> {
    let root = util::root();
    let workspace = root.join("plugins");
    let target_dir = root.join("target").join("plugins-build");
    let installed = util::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("rustup is required to build the plugins")?;
    if !installed.lines().any(|l| l.trim() == TARGET) {
        bail!(
            "the {TARGET} target is missing: run `cargo xtask setup` (rustup target add {TARGET})"
        );
    }
    util::run(
        util::cargo()
            .current_dir(&workspace)
            .args(["build", "--release", "--target", TARGET, "--target-dir"])
            .arg(&target_dir),
    )
    .context("building the plugins")?;
    let out = out_dir();
    for name in members(&workspace)? {
        let core = target_dir
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let bytes = std::fs::read(&core).with_context(|| format!("reading {}", core.display()))?;
        let component = wit_component::ComponentEncoder::default()
            .module(&bytes)
            .and_then(|e| e.validate(true).encode())
            .with_context(|| format!("turning {} into a component", core.display()))?;
        let dir = out.join(&name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join(format!("{name}.wasm")), &component)
            .with_context(|| format!("writing {name}.wasm"))?;
        let manifest = workspace.join(&name).join("plugin.toml");
        std::fs::copy(&manifest, dir.join("plugin.toml"))
            .with_context(|| format!("copying {}", manifest.display()))?;
        println!(
            "plugins: {name}: {} bytes -> {}",
            component.len(),
            dir.display()
        );
    }
    Ok(out)
}

/// `cargo xtask plugins`.
pub fn run() -> Result<()> {
    let out = build()?;
    println!("plugins: built into {}", out.display());
    Ok(())
}
