//! `sip-screener`: a VeloCache plugin that rejects calls to premium-rate numbers.
//!
//! For every INVITE the gateway relays, the user part of the Request-URI (`sip:900123@host`,
//! `tel:+1900…`) is compared with the prefixes of the plugin's configuration; a match is
//! rejected with the configured status (default `403 Premium rate numbers are blocked`): the
//! gateway answers the caller and forwards nothing. Every INVITE that goes on is tagged
//! `screened=no`; a rejected one is recorded as rejected by this plugin.
//!
//! Configuration (`[config]` in `plugin.toml`): `prefixes` (an array: `["900", "+1900"]`),
//! `status` (a number, 300–699) and `reason`.
mod screen;

use std::cell::OnceCell;

wit_bindgen::generate!({
    world: "sip-plugin",
    path: "../../wit",
});

use exports::velocache::plugin::sip::{Action, Guest, Message, Rejection};
use velocache::plugin::host;

thread_local! {
    /// The configuration, read once per instance.
    static RULES: OnceCell<screen::Rules> = const { OnceCell::new() };
}

struct Screener;

impl Guest for Screener {
    fn on_message(msg: Message) -> Action {
        if msg.method.as_deref() != Some("INVITE") {
            return Action::Observe(Vec::new());
        }
        let uri = msg.request_uri.as_deref().unwrap_or("");
        RULES.with(|cell| {
            let rules = cell.get_or_init(|| screen::Rules::from_config(&host::config()));
            match rules.verdict(uri) {
                Some((status, reason)) => {
                    host::log(
                        host::Level::Info,
                        &format!("call to {uri} rejected: premium-rate prefix"),
                    );
                    Action::Reject(Rejection { status, reason })
                }
                None => Action::Observe(vec![("screened".into(), "no".into())]),
            }
        })
    }
}

export!(Screener);
