//! An HTTP header rewriter: `[config] request_add` / `request_remove` change what the origin is
//! sent, `response_add` / `response_remove` what is stored and what the client gets. Each add is
//! `Name: value`, each remove a header name (any case).
use std::sync::OnceLock;

wit_bindgen::generate!({
    path: "../../wit",
    world: "http-plugin",
});

use exports::velocache::plugin::http::{
    Guest, Header, Request, RequestAction, RequestEdits, Response, ResponseEdits,
};

struct Rewriter;

#[derive(Default)]
struct Rules {
    request_add: Vec<Header>,
    request_remove: Vec<String>,
    response_add: Vec<Header>,
    response_remove: Vec<String>,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut r = Rules::default();
        let headers = |v: &str| -> Vec<Header> {
            v.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| Header {
                    name: n.trim().to_string(),
                    value: v.trim().to_string(),
                })
                .filter(|h| !h.name.is_empty())
                .collect()
        };
        let names = |v: &str| -> Vec<String> {
            v.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        };
        for (key, value) in velocache::plugin::host::config() {
            match key.as_str() {
                "request_add" => r.request_add = headers(&value),
                "request_remove" => r.request_remove = names(&value),
                "response_add" => r.response_add = headers(&value),
                "response_remove" => r.response_remove = names(&value),
                _ => {}
            }
        }
        r
    })
}

impl Guest for Rewriter {
    fn on_request(_req: Request) -> RequestAction {
        let r = rules();
        RequestAction::Pass(RequestEdits {
            add_headers: r.request_add.clone(),
            remove_headers: r.request_remove.clone(),
            cache_key: None,
            rule: None,
        })
    }

    fn on_response(_req: Request, _resp: Response) -> ResponseEdits {
        let r = rules();
        ResponseEdits {
            store: None,
            freshness_secs: None,
            add_headers: r.response_add.clone(),
            remove_headers: r.response_remove.clone(),
        }
    }
}

export!(Rewriter);
