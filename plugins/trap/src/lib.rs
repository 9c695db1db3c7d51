//! Panics on every call — a WebAssembly trap. The lab tests install it to check that the
//! daemon disables it, logs why, and answers every request as if it were absent.
wit_bindgen::generate!({
    path: "../../wit",
    world: "full-plugin",
});

use exports::velocache::plugin::{dns, http, sip, tcp};

struct Trap;

fn trap(hook: &str) -> ! {
    panic!("the trap plugin traps in its {hook} hook")
}

impl dns::Guest for Trap {
    fn on_query(_q: dns::Query) -> dns::Action {
        trap("dns")
    }
}

impl http::Guest for Trap {
    fn on_request(_req: http::Request) -> http::RequestAction {
        trap("http")
    }

    fn on_response(_req: http::Request, _resp: http::Response) -> http::ResponseEdits {
        trap("http")
    }
}

impl sip::Guest for Trap {
    fn on_message(_msg: sip::Message) -> sip::Action {
        trap("sip")
    }
}

impl tcp::Guest for Trap {
    fn on_event(_stream: u64, _ev: tcp::Event) -> Vec<tcp::Command> {
        trap("tcp")
    }
}

export!(Trap);
