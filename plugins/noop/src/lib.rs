//! Every hook, and does nothing: `pass`, no edits, `observe([])`, no commands. The benchmark's
//! no-op plugin: what a call costs when the plugin decides nothing.
wit_bindgen::generate!({
    path: "../../wit",
    world: "full-plugin",
});

use exports::velocache::plugin::{dns, http, sip, tcp};

struct Noop;

impl dns::Guest for Noop {
    fn on_query(_q: dns::Query) -> dns::Action {
        dns::Action::Pass
    }
}

impl http::Guest for Noop {
    fn on_request(_req: http::Request) -> http::RequestAction {
        http::RequestAction::Pass(http::RequestEdits {
            add_headers: Vec::new(),
            remove_headers: Vec::new(),
            cache_key: None,
            rule: None,
        })
    }

    fn on_response(_req: http::Request, _resp: http::Response) -> http::ResponseEdits {
        http::ResponseEdits {
            store: None,
            freshness_secs: None,
            add_headers: Vec::new(),
            remove_headers: Vec::new(),
        }
    }
}

impl sip::Guest for Noop {
    fn on_message(_msg: sip::Message) -> sip::Action {
        sip::Action::Observe(Vec::new())
    }
}

impl tcp::Guest for Noop {
    fn on_event(_stream: u64, _ev: tcp::Event) -> Vec<tcp::Command> {
        Vec::new()
    }
}

export!(Noop);
