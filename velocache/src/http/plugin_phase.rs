//! The WebAssembly plugins' `http` hook as a phase of the proxy, placed right before the rules.
//!
//! The request head enters `request_filter`: when a plugin applies to its host it is handed to
//! the plugins as the WIT `request` (headers as text; values that are not Latin-1 text are
//! passed lossily). A `deny` leaves as the client's answer (the origin is not asked). Edits of a
//! request that goes on are kept in the [`Ctx`]'s extensions and applied where they belong: the
//! rule a plugin names decides in the rules phase ([`RulePick`]), its cache key replaces the
//! derived one in `cache_key_filter`, its header changes reach the origin in
//! `upstream_request_filter`. The origin's response head enters `response_cache_filter`, goes
//! to the same plugins, and leaves with their header changes (stored and sent to the client),
//! their freshness override (`ctx.ttl_override`) and their verdict (`store = false`: not
//! stored). Requests no plugin applies to cost one check of the plugin set.
use http::{HeaderName, HeaderValue, Response, StatusCode, header, request, response};

use super::{
    Body, ProxyError,
    body::full,
    ctx::{Ctx, Scheme},
    phase::{Phase, Step, Verdict},
    rule_phase::RulePick,
};
use crate::{
    cache::{ObjectId, ObjectKey},
    plugins::{
        Hook, HttpDenyResponse, HttpHeader, HttpRequest, HttpRequestEdits, HttpRequestOutcome,
        HttpResponse, Plugins,
    },
};

/// The plugin phase.
pub struct PluginPhase {
    plugins: Plugins,
}

/// The request as the plugins saw it (for the response hook) and their edits.
#[derive(Clone)]
struct Asked {
    request: HttpRequest,
    edits: HttpRequestEdits,
}

impl PluginPhase {
    /// A phase calling `plugins` (reloads take effect on the next request).
    pub fn new(plugins: Plugins) -> PluginPhase {
        PluginPhase { plugins }
    }

    fn on_request(&self, ctx: &mut Ctx, req: &request::Parts) -> Option<Response<Body>> {
        if !self.plugins.has(Hook::Http) {
            return None;
        }
        let request = HttpRequest {
            method: ctx.method.to_string(),
            scheme: match ctx.conn.scheme {
                Scheme::Http => "http",
                Scheme::Https => "https",
            }
            .to_string(),
            host: ctx.host.clone(),
            path: ctx.path.clone(),
            headers: headers_of(&req.headers),
            client: ctx.conn.client.to_string(),
        };
        match self.plugins.http_request(&request) {
            HttpRequestOutcome::Deny { plugin, response } => {
                ctx.rule = Some(format!("plugin:{plugin}"));
                Some(deny(&plugin, response))
            }
            HttpRequestOutcome::Pass { asked: 0, .. } => None,
            HttpRequestOutcome::Pass { edits, .. } => {
                if let Some(rule) = &edits.rule {
                    ctx.extensions.insert(RulePick(rule.clone()));
                }
                ctx.extensions.insert(Asked { request, edits });
                None
            }
        }
    }

    fn on_response(&self, ctx: &mut Ctx, resp: &mut response::Parts) -> Verdict {
        let Some(asked) = ctx.extensions.get::<Asked>() else {
            return Verdict::Store;
        };
        let head = HttpResponse {
            status: resp.status.as_u16(),
            headers: headers_of(&resp.headers),
        };
        let edits = self.plugins.http_response(&asked.request, &head);
        edit_headers(&mut resp.headers, &edits.remove_headers, &edits.add_headers);
        if let Some(secs) = edits.freshness_secs {
            ctx.ttl_override = Some(u64::from(secs));
        }
        match edits.store {
            Some(false) => Verdict::DontStore("plugin"),
            _ => Verdict::Store,
        }
    }
}

/// Headers as the WIT's text pairs.
fn headers_of(map: &http::HeaderMap) -> Vec<HttpHeader> {
    map.iter()
        .map(|(name, value)| HttpHeader {
            name: name.as_str().to_string(),
            // Latin-1, as HTTP allows: every byte is one character.
            value: value.as_bytes().iter().map(|&b| char::from(b)).collect(),
        })
        .collect()
}

/// Remove `remove`, then add `add` (a header that is not valid HTTP is left out, logged).
fn edit_headers(map: &mut http::HeaderMap, remove: &[String], add: &[HttpHeader]) {
    for name in remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            map.remove(name);
        }
    }
    for h in add {
        match (
            HeaderName::from_bytes(h.name.as_bytes()),
            latin1(&h.value).and_then(|v| HeaderValue::from_bytes(&v).ok()),
        ) {
            (Ok(name), Some(value)) => {
                map.append(name, value);
            }
            _ => tracing::debug!(header = %h.name, "a plugin's header is not valid HTTP: left out"),
        }
    }
}

/// Text back to Latin-1 bytes (`None` if a character is outside it).
fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// A plugin's `deny` as the client's answer.
fn deny(plugin: &str, d: HttpDenyResponse) -> Response<Body> {
    let mut r = Response::new(full(d.body));
    *r.status_mut() = StatusCode::from_u16(d.status)
        .ok()
        .filter(|s| !s.is_informational())
        .unwrap_or(StatusCode::FORBIDDEN);
    edit_headers(r.headers_mut(), &[], &d.headers);
    if !r.headers().contains_key(header::CONTENT_TYPE) {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    tracing::debug!(
        plugin,
        status = r.status().as_u16(),
        "request denied by a plugin"
    );
    r
}

impl Phase for PluginPhase {
    fn name(&self) -> &str {
        "plugins"
    }

    fn request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<Response<Body>>, ProxyError>> {
        Step::Ready(Ok(self.on_request(ctx, req)))
    }

    fn cache_key_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        _req: &'a request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        if let Some(key) = ctx
            .extensions
            .get::<Asked>()
            .and_then(|a| a.edits.cache_key.clone())
        {
            // Its own namespace: a plugin's key never collides with a derived `url:` key.
            let text = format!("plugin:{key}");
            ctx.cache.key = Some(ObjectKey {
                id: ObjectId::of(&text),
                text,
                sha256: None,
            });
        }
        Step::Ready(Ok(()))
    }

    fn upstream_request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        if let Some(a) = ctx.extensions.get::<Asked>() {
            edit_headers(
                &mut req.headers,
                &a.edits.remove_headers,
                &a.edits.add_headers,
            );
        }
        Step::Ready(Ok(()))
    }

    fn response_cache_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        resp: &'a mut response::Parts,
    ) -> Step<'a, Result<Verdict, ProxyError>> {
        Step::Ready(Ok(self.on_response(ctx, resp)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::{
        super::test_harness::{Route, cacheable, get, send, settle, setup_with},
        *,
    };
    use crate::plugins::testutil::{Body, install, plugins_in};

    async fn with_edits(rules: &str) -> (super::super::test_harness::Setup, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        install(dir.path(), "edits", &[Hook::Http], Body::HttpEdits, "");
        let plugins = plugins_in(dir.path());
        plugins.reload().unwrap();
        let phase: Arc<dyn Phase> = Arc::new(PluginPhase::new(plugins));
        (setup_with(rules, |_| {}, vec![phase]).await, dir)
    }

    #[tokio::test]
    async fn plugin_edits_reach_the_origin_the_client_and_the_cache() {
        let (s, _dir) = with_edits("").await;
        s.origin.route(
            "/a",
            Route {
                headers: vec![
                    ("cache-control", "max-age=600".into()),
                    ("x-secret", "s".into()),
                ],
                ..cacheable(Bytes::from_static(b"hello"))
            },
        );
        let got = send(s.proxy_addr, "GET", "/a", &[("x-drop", "1")]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, Bytes::from_static(b"hello"));
        assert_eq!(got.headers["x-res"], "1", "{:?}", got.headers);
        assert!(got.headers.get("x-secret").is_none());
        let seen = s.origin.last("/a");
        assert_eq!(seen["x-plg"], "yes", "{seen:?}");
        assert!(seen.get("x-drop").is_none());
        // `store = false`: the next request goes to the origin again.
        settle().await;
        get(s.proxy_addr, "/a").await;
        assert_eq!(s.origin.hits("/a"), 2);
    }

    #[tokio::test]
    async fn a_plugin_names_the_rule_that_decides() {
        let (s, _dir) =
            with_edits("[[rule]]\nname = \"keep\"\nmatch_path = \"/never\"\naction = \"deny\"\n")
                .await;
        s.origin.route("/b", cacheable(Bytes::from_static(b"b")));
        let got = get(s.proxy_addr, "/b").await;
        assert_eq!(got.status, 403, "the plugin picked the deny rule");
        assert!(String::from_utf8_lossy(&got.body).contains("keep"));
        assert_eq!(s.origin.hits("/b"), 0);
    }

    #[test]
    fn header_edits_remove_then_add_and_skip_bad_ones() {
        let mut map = http::HeaderMap::new();
        map.insert("x-old", HeaderValue::from_static("1"));
        map.insert("x-keep", HeaderValue::from_static("2"));
        let add = |n: &str, v: &str| HttpHeader {
            name: n.into(),
            value: v.into(),
        };
        edit_headers(
            &mut map,
            &["X-Old".into()],
            &[
                add("X-New", "é"),
                add("bad name", "x"),
                add("x-u", "\u{263a}"),
            ],
        );
        assert!(map.get("x-old").is_none());
        assert_eq!(map.get("x-keep").unwrap(), "2");
        assert_eq!(map.get("x-new").unwrap().as_bytes(), [0xe9]);
        assert!(map.get("x-u").is_none());
        let back = headers_of(&map);
        assert!(back.iter().any(|h| h.name == "x-new" && h.value == "é"));
    }
}
