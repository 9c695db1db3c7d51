//! `Upgrade` (WebSocket and friends): the request goes to the original destination on a
//! connection of its own; if the origin switches protocols (101), both connections are handed
//! over by hyper and spliced byte for byte until either side closes.
use std::sync::Arc;

use http::{Request, Response, StatusCode, request};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::{
    Body, ProxyError,
    body::boxed,
    ctx::{CacheStatus, Ctx},
    headers::add_via,
    proxy::Proxy,
};

pub(super) async fn proxy(
    proxy: &Arc<Proxy>,
    ctx: &mut Ctx,
    mut parts: request::Parts,
    body: Incoming,
) -> Result<Response<Body>, ProxyError> {
    ctx.cache = CacheStatus::Bypass;
    let orig_dst = ctx.conn.orig_dst.0;
    let fail = |reason: String| ProxyError::Upgrade { orig_dst, reason };
    // The client's half of the upgrade, resolved once our 101 has been sent.
    let client_side = parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| fail("the client connection cannot be upgraded".into()))?;
    let tcp = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        TcpStream::connect(orig_dst),
    )
    .await
    .map_err(|_| fail("connect timed out".into()))?
    .map_err(|e| fail(format!("connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| fail(format!("handshake: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "upgrade connection to the origin ended");
        }
    });
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
    add_via(&mut parts.headers, parts.version, &proxy.settings.via);
    proxy.metrics.origin_fetch();
    let mut resp = sender
        .send_request(Request::from_parts(parts, boxed(body)))
        .await
        .map_err(|e| fail(format!("request: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp.map(boxed));
    }
    let origin_side = hyper::upgrade::on(&mut resp);
    let trace_id = ctx.trace_id.clone();
    tokio::spawn(async move {
        let (client, origin) = match tokio::try_join!(client_side, origin_side) {
            Ok(pair) => pair,
            Err(e) => {
                debug!(%trace_id, error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut origin = TokioIo::new(origin);
        match tokio::io::copy_bidirectional(&mut client, &mut origin).await {
            Ok((up, down)) => {
                debug!(%trace_id, bytes_up = up, bytes_down = down, "upgraded connection closed")
            }
            Err(e) => debug!(%trace_id, error = %e, "upgraded connection broke"),
        }
    });
    let (mut rparts, _) = resp.into_parts();
    add_via(
        &mut rparts.headers,
        http::Version::HTTP_11,
        &proxy.settings.via,
    );
    Ok(Response::from_parts(rparts, super::body::empty()))
}
