//! The dashboard's files, built into the binary: the daemon serves them itself, so the page
//! needs no CDN, no internet and no files beside the binary.
//!
//! The sources are `velocache/web/` in the repository: plain HTML, CSS and ES modules with no
//! build step (`app.js` imports the views by relative path, so they all live under
//! `/assets/`). Each is embedded with `include_bytes!`; editing one and rebuilding is all it
//! takes. A file added to `velocache/web/` must be listed in [`ASSETS`] too: the unit test below
//! fails otherwise.

/// URL path, content type, bytes. `/` is the page itself.
pub(crate) const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "/assets/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/style.css"),
    ),
    (
        "/assets/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../web/favicon.svg"),
    ),
    (
        "/assets/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "/assets/api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/api.js"),
    ),
    (
        "/assets/util.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/util.js"),
    ),
    (
        "/assets/charts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/charts.js"),
    ),
    (
        "/assets/live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/live.js"),
    ),
    (
        "/assets/inspector.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/inspector.js"),
    ),
    (
        "/assets/analytics.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/analytics.js"),
    ),
    (
        "/assets/rules.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/rules.js"),
    ),
    (
        "/assets/calls.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/calls.js"),
    ),
    (
        "/assets/cache.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/cache.js"),
    ),
];

/// The content type and bytes of the file served at `path` (`/index.html` is `/`).
pub(crate) fn find(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = if path == "/index.html" { "/" } else { path };
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, t, b)| (*t, *b))
}

#[cfg(test)]
mod tests {
    use super::{ASSETS, find};

    /// Every file in `velocache/web/` is served, and every served file is one of them.
    #[test]
    fn every_source_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = ASSETS
            .iter()
            .map(|(p, _, _)| match *p {
                "/" => "index.html".to_string(),
                p => p.trim_start_matches("/assets/").to_string(),
            })
            .collect();
        served.sort();
        assert_eq!(on_disk, served, "velocache/web/ and ASSETS differ");
        for (path, _, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{path} is empty");
        }
    }

    /// The page loads nothing from elsewhere: no absolute URL to another host in any file.
    #[test]
    fn no_asset_names_another_site() {
        for (path, _, bytes) in ASSETS {
            let text = String::from_utf8_lossy(bytes);
            for bad in ["http://", "https://", "//fonts.", "@import"] {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| l.contains(bad) && !l.contains("http://www.w3.org/2000/svg"))
                    .collect();
                assert!(hits.is_empty(), "{path} names another site: {hits:?}");
            }
        }
    }

    #[test]
    fn the_page_is_served_at_the_root_and_as_index_html() {
        assert!(find("/").is_some_and(|(t, _)| t.starts_with("text/html")));
        assert_eq!(find("/"), find("/index.html"));
        assert!(find("/assets/app.js").is_some_and(|(t, _)| t.starts_with("text/javascript")));
        assert!(find("/assets/nope.js").is_none());
    }
}
