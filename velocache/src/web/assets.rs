//! The dashboard's files, built into the binary: the daemon serves them itself, so the page
//! needs no CDN, no internet and no files beside the binary.
//!
//! The sources are `velocache/web/` in the repository (plain HTML, CSS and ES modules: no build
//! step); each is embedded with `include_bytes!`, so editing one and rebuilding is all it takes.

/// URL path, content type, bytes.
pub const ASSETS: &[(&str, &str, &[u8])] = &[(
    "/",
    "text/html; charset=utf-8",
    include_bytes!("../../web/index.html"),
)];

/// The file served at `path`.
pub fn find(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, t, b)| (*t, *b))
}
