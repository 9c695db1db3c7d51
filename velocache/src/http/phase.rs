//! The phase chain: how the layers built on the proxy take part in a request (pingora's
//! `ProxyHttp` filters, as a list of [`Phase`]s instead of one trait object).
//!
//! A request's [`Ctx`] and heads enter each hook of each phase in turn, in the chain's order; a
//! hook may change them, decide something into the `Ctx`, or — in the hooks that may — answer
//! the request itself (pingora's `Ok(true)`: here `Ok(Some(response))`), which skips the rest of
//! the chain and the proxy's own work for that step. The hooks, in the order a request meets
//! them (`proxy` runs them):
//!
//! 1. [`Phase::request_filter`] — the request head as the client sent it, after the framing
//!    checks. May answer (the CA page; a `deny` rule's 403).
//! 2. [`Phase::cache_key_filter`] — only for requests that go through the cache: may change
//!    `ctx.key_options` or set `ctx.cache.key` outright.
//! 3. [`Phase::upstream_request_filter`] — every request sent to an origin, after hop-by-hop
//!    headers were removed and `Via` added, before the framing is recomputed (so no phase can
//!    desynchronise the request's framing); a request sent with the client's body also passes
//!    it through [`Phase::request_body_filter`], which may wrap it without changing its bytes.
//! 4. [`Phase::upstream_response_filter`] — every origin response head, as received.
//! 5. [`Phase::response_cache_filter`] — the verdict on an origin response the cache is about
//!    to store (a miss, a refetch) or that is forwarded around the cache (a method or rule that
//!    bypasses it): store it, do not, or answer instead (content-type rules).
//! 6. [`Phase::response_filter`] — every response head sent to the client, from the origin,
//!    the cache or the gateway itself; then [`Phase::response_body_filter`], which may wrap the
//!    body on its way to the client (a bandwidth limit) without changing its bytes.
//! 7. [`Phase::body_tap`] — right after `response_filter`, on every response sent to the
//!    client: a phase that wants to see the body (a capture, a learned store) returns a
//!    [`BodyTap`], which is given each chunk as it leaves and, once, the request's end.
//! 8. [`Phase::logging`] — once, when the response body has been sent or abandoned.
//!
//! Every hook has a default that does nothing, so a phase implements only what it needs. Hooks
//! return a [`Step`]: a phase that decides from what it is given answers `Step::Ready`, which
//! costs no allocation; one that must wait (a plugin host, a lookup) returns a boxed future. An
//! empty chain costs a loop over nothing. `logging` is synchronous: it runs where the body ends
//! (possibly in a `Drop`), so a phase that has I/O to do hands the record to a task of its own.
//!
//! An error from a hook fails the request as any proxy error does (an error page, the `request
//! failed` line); in `response_filter` it replaces the response with the error page.
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, request, response};

pub use crate::cache::Step;

use super::{
    Body, ProxyError,
    ctx::{Ctx, RequestEnd},
};

/// A phase's verdict on an origin response ([`Phase::response_cache_filter`]).
pub enum Verdict {
    /// Store it if HTTP's rules allow.
    Store,
    /// Do not store it (the reason is logged as `not_stored`).
    DontStore(&'static str),
    /// Answer the client with this instead (the origin's response is dropped).
    Answer(Response<Body>),
}

/// A phase's view of one response body as the client receives it ([`Phase::body_tap`]).
///
/// Its methods run inside the body's poll, on the request's task: they must be cheap and
/// bounded (copy up to a cap, hand heavy work to a task of their own). The body does not wait
/// for a tap, and a tap cannot change what the client gets.
pub trait BodyTap: Send + 'static {
    /// The next chunk sent to the client, in order.
    fn chunk(&mut self, data: &Bytes);

    /// The body ended, failed or was dropped (`end.complete` tells which); called once, after
    /// the access-log line and before the `logging` phases.
    fn end(self: Box<Self>, ctx: &Ctx, end: &RequestEnd);
}

/// One phase of the chain. Every hook's default does nothing.
pub trait Phase: Send + Sync + 'static {
    /// The phase's name, for logs.
    fn name(&self) -> &str;

    /// Whether the phase runs after every other (an observer that must see heads as they are
    /// finally sent); such phases keep their order among themselves.
    fn runs_last(&self) -> bool {
        false
    }

    /// The client's request head: answer it (`Some`), or let it go on.
    fn request_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<Response<Body>>, ProxyError>> {
        Step::Ready(Ok(None))
    }

    /// The cache key of a request that goes through the cache.
    fn cache_key_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _req: &'a request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        Step::Ready(Ok(()))
    }

    /// A request about to be sent to an origin.
    fn upstream_request_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _req: &'a mut request::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        Step::Ready(Ok(()))
    }

    /// An origin's response head, as received.
    fn upstream_response_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _resp: &'a mut response::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        Step::Ready(Ok(()))
    }

    /// Whether an origin response may be stored, or is answered otherwise.
    fn response_cache_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _resp: &'a mut response::Parts,
    ) -> Step<'a, Result<Verdict, ProxyError>> {
        Step::Ready(Ok(Verdict::Store))
    }

    /// A response head about to be sent to the client.
    fn response_filter<'a>(
        &'a self,
        _ctx: &'a mut Ctx,
        _resp: &'a mut response::Parts,
    ) -> Step<'a, Result<(), ProxyError>> {
        Step::Ready(Ok(()))
    }

    /// The client's request body on its way to the origin (a request with a body, which goes
    /// around the cache): a phase may wrap it to see it (a capture), never change its bytes or
    /// its size hint — the framing sent upstream is computed from them.
    fn request_body_filter(&self, _ctx: &Ctx, body: Body) -> Body {
        body
    }

    /// The response body about to be sent to the client, after every `response_filter`: a
    /// phase may wrap it (a bandwidth limit) but never change its bytes, so the framing already
    /// announced stays true. Most phases leave it alone.
    fn response_body_filter(&self, _ctx: &Ctx, body: Body) -> Body {
        body
    }

    /// The response head as the client gets it (after every `response_filter`): return a tap
    /// to see its body. Most requests should get `None`: a tap is paid for on every chunk.
    fn body_tap(&self, _ctx: &Ctx, _resp: &response::Parts) -> Option<Box<dyn BodyTap>> {
        None
    }

    /// The request is over.
    fn logging(&self, _ctx: &Ctx, _end: &RequestEnd) {}
}

/// The phases of a proxy, in order. Cloning shares them.
#[derive(Clone, Default)]
pub struct Chain {
    phases: Arc<[Arc<dyn Phase>]>,
}

impl Chain {
    /// A chain of `phases`, run in this order (those that ask to run last, last).
    pub fn new(phases: Vec<Arc<dyn Phase>>) -> Chain {
        let (last, mut phases): (Vec<_>, Vec<_>) = phases.into_iter().partition(|p| p.runs_last());
        phases.extend(last);
        Chain {
            phases: phases.into(),
        }
    }

    /// Hook 1: the first answer wins.
    pub async fn request_filter(
        &self,
        ctx: &mut Ctx,
        req: &mut request::Parts,
    ) -> Result<Option<Response<Body>>, ProxyError> {
        for p in self.phases.iter() {
            if let Some(answer) = p.request_filter(ctx, req).await? {
                return Ok(Some(answer));
            }
        }
        Ok(None)
    }

    /// Hook 2.
    pub async fn cache_key_filter(
        &self,
        ctx: &mut Ctx,
        req: &request::Parts,
    ) -> Result<(), ProxyError> {
        for p in self.phases.iter() {
            p.cache_key_filter(ctx, req).await?;
        }
        Ok(())
    }

    /// Hook 3.
    pub async fn upstream_request_filter(
        &self,
        ctx: &mut Ctx,
        req: &mut request::Parts,
    ) -> Result<(), ProxyError> {
        for p in self.phases.iter() {
            p.upstream_request_filter(ctx, req).await?;
        }
        Ok(())
    }

    /// Hook 4.
    pub async fn upstream_response_filter(
        &self,
        ctx: &mut Ctx,
        resp: &mut response::Parts,
    ) -> Result<(), ProxyError> {
        for p in self.phases.iter() {
            p.upstream_response_filter(ctx, resp).await?;
        }
        Ok(())
    }

    /// Hook 5: the first answer wins; otherwise any phase's "do not store" does (the first
    /// reason given is kept).
    pub async fn response_cache_filter(
        &self,
        ctx: &mut Ctx,
        resp: &mut response::Parts,
    ) -> Result<Verdict, ProxyError> {
        let mut verdict = Verdict::Store;
        for p in self.phases.iter() {
            match p.response_cache_filter(ctx, resp).await? {
                Verdict::Answer(r) => return Ok(Verdict::Answer(r)),
                Verdict::DontStore(why) if matches!(verdict, Verdict::Store) => {
                    verdict = Verdict::DontStore(why);
                }
                _ => {}
            }
        }
        Ok(verdict)
    }

    /// Hook 6.
    pub async fn response_filter(
        &self,
        ctx: &mut Ctx,
        resp: &mut response::Parts,
    ) -> Result<(), ProxyError> {
        for p in self.phases.iter() {
            p.response_filter(ctx, resp).await?;
        }
        Ok(())
    }

    /// Hook 3b, for requests with a body: each phase wraps what the one before returned.
    pub fn request_body_filter(&self, ctx: &Ctx, body: Body) -> Body {
        self.phases
            .iter()
            .fold(body, |body, p| p.request_body_filter(ctx, body))
    }

    /// Hook 6b: each phase wraps what the one before returned.
    pub fn response_body_filter(&self, ctx: &Ctx, body: Body) -> Body {
        self.phases
            .iter()
            .fold(body, |body, p| p.response_body_filter(ctx, body))
    }

    /// Hook 7: every phase's tap, in order (an empty `Vec` allocates nothing).
    pub fn body_taps(&self, ctx: &Ctx, resp: &response::Parts) -> Vec<Box<dyn BodyTap>> {
        self.phases
            .iter()
            .filter_map(|p| p.body_tap(ctx, resp))
            .collect()
    }

    /// Hook 8.
    pub fn logging(&self, ctx: &Ctx, end: &RequestEnd) {
        for p in self.phases.iter() {
            p.logging(ctx, end);
        }
    }
}
