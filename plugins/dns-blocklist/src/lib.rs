//! A DNS blocklist: the names in `[config] names` (one per line, as the daemon flattens the
//! manifest's array), with their subdomains, are answered NXDOMAIN — or REFUSED with
//! `answer = "refused"` — before the cache; every other query passes.
//!
//! The list is read once per instance, at its first query, and kept: a changed list takes
//! effect with `velocache plugins reload`.
use std::sync::OnceLock;

wit_bindgen::generate!({
    path: "../../wit",
    world: "dns-plugin",
});

use exports::velocache::plugin::dns::{Action, DenyCode, Guest, Query};
use velocache::plugin::host;

struct Blocklist;

struct List {
    /// Lower-case names, without the trailing dot.
    names: Vec<String>,
    answer: DenyCode,
}

fn list() -> &'static List {
    static LIST: OnceLock<List> = OnceLock::new();
    LIST.get_or_init(|| {
        let mut names = Vec::new();
        let mut answer = DenyCode::Nxdomain;
        for (key, value) in host::config() {
            match key.as_str() {
                "names" => names.extend(
                    value
                        .lines()
                        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
                        .filter(|n| !n.is_empty()),
                ),
                "answer" if value.eq_ignore_ascii_case("refused") => answer = DenyCode::Refused,
                _ => {}
            }
        }
        host::log(
            host::Level::Info,
            &format!("dns-blocklist: {} names", names.len()),
        );
        List { names, answer }
    })
}

/// Whether `name` is `blocked` or a name under it.
fn under(name: &str, blocked: &str) -> bool {
    name == blocked
        || (name.len() > blocked.len()
            && name.ends_with(blocked)
            && name.as_bytes()[name.len() - blocked.len() - 1] == b'.')
}

impl Guest for Blocklist {
    fn on_query(q: Query) -> Action {
        let list = list();
        if list.names.iter().any(|b| under(&q.name, b)) {
            Action::Deny(list.answer)
        } else {
            Action::Pass
        }
    }
}

export!(Blocklist);
