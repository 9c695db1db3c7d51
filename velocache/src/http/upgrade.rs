//! Tunnels: `Upgrade` (WebSocket and friends) and `CONNECT`. The request goes to the original
//! destination on a connection of its own — never a pooled one, whose next request would be
//! read as tunnel bytes — and if the origin agrees (101 for an upgrade, 2xx for CONNECT), both
//! connections are handed over by hyper and relayed byte for byte until either side closes.
//! The origin's answer leaves as the response; the tunnel's bytes never pass the phases.
use http::{HeaderValue, Request, Response, StatusCode, request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::{
    Body, ProxyError,
    answer::error_response,
    body::{boxed, empty},
    ctx::{CacheStatus, Ctx, Scheme},
    framing,
    headers::{add_via, strip_hop_by_hop},
    metrics::Metrics,
};

/// What a tunnel needs of the proxy.
#[derive(Clone, Copy)]
pub(super) struct Tunnels<'a> {
    /// `Via` pseudonym.
    pub via: &'a HeaderValue,
    /// Where origin requests are counted.
    pub metrics: &'a Metrics,
    /// How long the origin has to accept the connection.
    pub connect_timeout: std::time::Duration,
}

/// Which kind of tunnel a request asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `Connection: upgrade` + `Upgrade`: the origin answers 101.
    Upgrade,
    /// `CONNECT host:port`: the origin (itself a proxy) answers 2xx.
    Connect,
}

/// Relay an `Upgrade` request and, on 101, the upgraded connection.
pub(super) async fn upgrade(
    t: Tunnels<'_>,
    ctx: &mut Ctx,
    parts: request::Parts,
    body: Incoming,
) -> Result<Response<Body>, ProxyError> {
    tunnel(t, ctx, parts, body, Kind::Upgrade).await
}

/// Relay a `CONNECT` to the original destination (a client talking to a forward proxy there)
/// and, on 2xx, the tunnel. Only over plain HTTP/1.1: the tunnel's bytes go to the original
/// destination as they are, which is right only when the client's connection was not
/// decrypted, and HTTP/2's CONNECT streams are not relayed.
pub(super) async fn connect(
    t: Tunnels<'_>,
    ctx: &mut Ctx,
    parts: request::Parts,
    body: Incoming,
) -> Result<Response<Body>, ProxyError> {
    if ctx.conn.scheme != Scheme::Http || parts.version != http::Version::HTTP_11 {
        ctx.cache.status = CacheStatus::Bypass;
        let mut r = error_response(
            StatusCode::NOT_IMPLEMENTED,
            "CONNECT is relayed only on plain HTTP/1.1 connections",
        );
        r.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        return Ok(r);
    }
    tunnel(t, ctx, parts, body, Kind::Connect).await
}

async fn tunnel(
    t: Tunnels<'_>,
    ctx: &mut Ctx,
    mut parts: request::Parts,
    body: Incoming,
    kind: Kind,
) -> Result<Response<Body>, ProxyError> {
    ctx.cache.status = CacheStatus::Bypass;
    let orig_dst = ctx.conn.orig_dst.0;
    let fail = |reason: String| ProxyError::Upgrade { orig_dst, reason };
    // The client's half of the tunnel, resolved once our 101 / 2xx has been sent.
    let client_side = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| fail("the client connection cannot be upgraded".into()))?;
    let tcp = tokio::time::timeout(t.connect_timeout, TcpStream::connect(orig_dst))
        .await
        .map_err(|_| fail("connect timed out".into()))?
        .map_err(|e| fail(format!("connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| fail(format!("handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "tunnel connection to the origin ended");
        }
    });
    match kind {
        Kind::Upgrade => {
            // Upgrade and Connection must reach the origin; other hop-by-hop fields must not.
            for h in [
                "keep-alive",
                "proxy-connection",
                "te",
                "trailer",
                "proxy-authorization",
            ] {
                parts.headers.remove(h);
            }
        }
        // A CONNECT is meant for the proxy at the original destination: its credentials
        // (`Proxy-Authorization`) are for that proxy, not for us, so they stay.
        Kind::Connect => {
            let auth = parts.headers.remove(http::header::PROXY_AUTHORIZATION);
            strip_hop_by_hop(&mut parts.headers);
            if let Some(auth) = auth {
                parts
                    .headers
                    .insert(http::header::PROXY_AUTHORIZATION, auth);
            }
        }
    }
    framing::frame_upstream(&mut parts, &http_body::Body::size_hint(&body));
    add_via(&mut parts.headers, parts.version, t.via);
    t.metrics.origin_fetch();
    let mut resp = sender
        .send_request(Request::from_parts(
            parts,
            boxed(framing::ClientBody::new(body)),
        ))
        .await
        .map_err(|e| fail(format!("request: {e}")))?;
    let agreed = match kind {
        Kind::Upgrade => resp.status() == StatusCode::SWITCHING_PROTOCOLS,
        Kind::Connect => resp.status().is_success(),
    };
    if !agreed {
        return Ok(resp.map(boxed));
    }
    let origin_side = hyper::upgrade::on(&mut resp);
    let trace_id = ctx.trace_id.clone();
    tokio::spawn(async move {
        let (client, origin) = match tokio::try_join!(client_side, origin_side) {
            Ok(pair) => pair,
            Err(e) => {
                debug!(%trace_id, error = %e, "tunnel did not open");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut origin = TokioIo::new(origin);
        match tokio::io::copy_bidirectional(&mut client, &mut origin).await {
            Ok((up, down)) => {
                debug!(%trace_id, bytes_up = up, bytes_down = down, "tunnel closed")
            }
            Err(e) => debug!(%trace_id, error = %e, "tunnel broke"),
        }
    });
    let (mut rparts, _) = resp.into_parts();
    add_via(&mut rparts.headers, http::Version::HTTP_11, t.via);
    Ok(Response::from_parts(rparts, empty()))
}
