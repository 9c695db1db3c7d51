//! Building this crate needs the `bpf-linker` binary, which cargo cannot express as a dependency.
//! Re-run (and so rebuild the object) whenever the linker on PATH changes.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found on PATH; run `cargo xtask setup`"),
    }
}
