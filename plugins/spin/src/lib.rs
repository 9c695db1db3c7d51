//! Loops forever on every call. The lab tests install it to check that the time budget
//! (`[plugins] time_budget_ms`) stops the call, the plugin is disabled, and the request is
//! answered as if it were absent.
wit_bindgen::generate!({
    path: "../../wit",
    world: "full-plugin",
});

use exports::velocache::plugin::{dns, http, sip, tcp};

struct Spin;

fn spin() -> ! {
    loop {
        std::hint::spin_loop();
    }
}

impl dns::Guest for Spin {
    fn on_query(_q: dns::Query) -> dns::Action {
        spin()
    }
}

impl http::Guest for Spin {
    fn on_request(_req: http::Request) -> http::RequestAction {
        spin()
    }

    fn on_response(_req: http::Request, _resp: http::Response) -> http::ResponseEdits {
        spin()
    }
}

impl sip::Guest for Spin {
    fn on_message(_msg: sip::Message) -> sip::Action {
        spin()
    }
}

impl tcp::Guest for Spin {
    fn on_event(_stream: u64, _ev: tcp::Event) -> Vec<tcp::Command> {
        spin()
    }
}

export!(Spin);
