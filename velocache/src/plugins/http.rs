//! The HTTP hooks: a request before the rules and the cache, an origin response before the
//! cache stores it.
//!
//! Plugins whose `hosts` match the request's host are asked in order. On a request the first
//! `deny` answers the client and the rest are not called; the edits of those that pass add up
//! (headers added and removed by each; the first cache key and rule named win). On a response
//! every matching plugin is asked and the edits add up: any `store = false` keeps the response
//! out of the cache, the first freshness given wins. A plugin that fails counts as passing
//! untouched (and is disabled).
use super::{Hook, Plugins, runtime::bindings::exports::velocache::plugin::http};

/// A request as the `http.on-request` hook receives it.
pub type HttpRequest = http::Request;
/// One header.
pub type HttpHeader = http::Header;
/// A plugin's decision on a request.
pub type HttpRequestAction = http::RequestAction;
/// Changes to a request that goes on.
pub type HttpRequestEdits = http::RequestEdits;
/// A response a plugin answers with.
pub type HttpDenyResponse = http::DenyResponse;
/// An origin response head as `http.on-response` receives it.
pub type HttpResponse = http::Response;
/// Changes to a response, and the cache's decision.
pub type HttpResponseEdits = http::ResponseEdits;

/// What the request plugins decided together.
#[derive(Debug, Clone)]
pub enum HttpRequestOutcome {
    /// Go on with these edits (which may be empty); `plugins` is how many were asked.
    Pass {
        /// The edits of every plugin that passed.
        edits: HttpRequestEdits,
        /// How many plugins were asked (0: none applies, the response hook need not run).
        asked: usize,
    },
    /// Answer the client with this.
    Deny {
        /// The plugin that denied.
        plugin: String,
        /// Its answer.
        response: HttpDenyResponse,
    },
}

/// Edits that change nothing.
pub fn no_request_edits() -> HttpRequestEdits {
    HttpRequestEdits {
        add_headers: Vec::new(),
        remove_headers: Vec::new(),
        cache_key: None,
        rule: None,
    }
}

/// Response edits that change nothing.
pub fn no_response_edits() -> HttpResponseEdits {
    HttpResponseEdits {
        store: None,
        freshness_secs: None,
        add_headers: Vec::new(),
        remove_headers: Vec::new(),
    }
}

impl Plugins {
    /// Ask the HTTP plugins that apply to `req.host`.
    pub fn http_request(&self, req: &HttpRequest) -> HttpRequestOutcome {
        let set = self.current();
        let mut edits = no_request_edits();
        let mut asked = 0;
        for p in set.hooked(Hook::Http) {
            if !p.live() || !p.manifest.matches(&req.host) {
                continue;
            }
            asked += 1;
            let action = p.call(Hook::Http, |store, g| match &g.http {
                Some(http) => http.call_on_request(store, req),
                None => Ok(HttpRequestAction::Pass(no_request_edits())),
            });
            match action {
                Ok(HttpRequestAction::Deny(response)) => {
                    return HttpRequestOutcome::Deny {
                        plugin: p.name().to_string(),
                        response,
                    };
                }
                Ok(HttpRequestAction::Pass(e)) => {
                    edits.remove_headers.extend(e.remove_headers);
                    edits.add_headers.extend(e.add_headers);
                    edits.cache_key = edits.cache_key.or(e.cache_key);
                    edits.rule = edits.rule.or(e.rule);
                }
                Err(_) => {}
            }
        }
        HttpRequestOutcome::Pass { edits, asked }
    }

    /// Ask the HTTP plugins that apply to `req.host` about the origin's response `resp`.
    pub fn http_response(&self, req: &HttpRequest, resp: &HttpResponse) -> HttpResponseEdits {
        let set = self.current();
        let mut edits = no_response_edits();
        for p in set.hooked(Hook::Http) {
            if !p.live() || !p.manifest.matches(&req.host) {
                continue;
            }
            let got = p.call(Hook::Http, |store, g| match &g.http {
                Some(http) => http.call_on_response(store, req, resp),
                None => Ok(no_response_edits()),
            });
            let Ok(e) = got else { continue };
            edits.store = match (edits.store, e.store) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (a, b) => a.or(b),
            };
            edits.freshness_secs = edits.freshness_secs.or(e.freshness_secs);
            edits.remove_headers.extend(e.remove_headers);
            edits.add_headers.extend(e.add_headers);
        }
        edits
    }
}
