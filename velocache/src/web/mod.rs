//! The web dashboard's listener (`[admin] web_listen`): the page, its login, and the admin API
//! behind a session.
//!
//! A request enters [`handle`] and goes one of four ways:
//! - `/` and `/assets/…`: the page's files, built into the binary ([`assets`]): no CDN, no
//!   third-party request, and a `Content-Security-Policy` that allows none;
//! - `/web/login`, `/web/session`, `/web/logout`: tokens in, a session cookie and a CSRF token
//!   out ([`session`]);
//! - `/v1/live/ws`: the live feed as a WebSocket ([`ws`]);
//! - every other `/v1/…`: the same admin API the CLI uses ([`crate::control::handle`]), with
//!   the session's role — the API itself refuses a read-only session's changes. A change
//!   (anything but `GET`) must carry the session's `X-CSRF-Token`, and a request whose `Origin`
//!   is another site is refused, so no page elsewhere can act with the operator's cookie.
//!
//! While the listener serves, [`ticker`] flushes the live feed's DNS hit sums every second and
//! closes an analytics interval every five.
pub mod assets;
pub mod session;
#[cfg(test)]
mod tests;
mod ticker;
mod ws;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use self::session::{LoginError, Sessions};
use crate::{
    admin::api::{ErrorBody, ErrorKind, paths},
    config::Config,
    control::{Access, ControlError, ControlPlane, read_token, token_matches},
};

/// Largest login body.
const MAX_LOGIN_BODY: usize = 4096;
/// How long a failed login waits before its answer.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(300);

type Reply = Response<Full<Bytes>>;

/// `POST /web/login`.
#[derive(Debug, Deserialize)]
struct LoginRequest {
    token: String,
}

/// The answer to a login and to `GET /web/session`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionInfo {
    /// `admin` or `readonly`.
    pub role: String,
    /// The token to send as `X-CSRF-Token` with every change.
    pub csrf: String,
}

/// The bound dashboard listener, not yet serving.
pub struct WebServer {
    listener: TcpListener,
    sessions: Arc<Sessions>,
}

impl WebServer {
    /// Bind `[admin] web_listen` and read the tokens; `None` when the dashboard is off.
    pub async fn bind(config: &Config) -> Result<Option<WebServer>, ControlError> {
        let Some(addr) = config.admin.web_listen else {
            return Ok(None);
        };
        let admin = read_token(config.admin.token_file.as_deref())?;
        let readonly = match &config.admin.readonly_token_file {
            Some(f) => Some(read_token(Some(f))?),
            None => None,
        };
        if readonly
            .as_ref()
            .is_some_and(|r| token_matches(r.as_bytes(), admin.as_bytes()))
        {
            return Err(ControlError::Token {
                path: config.admin.readonly_token_file.clone().unwrap_or_default(),
                reason: "the read-only token must differ from the admin token".into(),
            });
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ControlError::Bind {
                what: "web dashboard listener",
                addr: addr.to_string(),
                source,
            })?;
        Ok(Some(WebServer {
            listener,
            sessions: Arc::new(Sessions::new(admin, readonly)),
        }))
    }

    /// Where it listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serve until `cancel`.
    pub async fn serve(self, plane: Arc<ControlPlane>, cancel: CancellationToken) {
        info!(addr = ?self.local_addr(), "web dashboard listening");
        let mut tasks = JoinSet::new();
        if let Some(live) = plane.hub().live() {
            tasks.spawn(ticker::run(plane.clone(), live, cancel.clone()));
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        debug!(peer = %peer, "web dashboard connection");
                        let plane = plane.clone();
                        let sessions = self.sessions.clone();
                        let cancel = cancel.clone();
                        tasks.spawn(async move {
                            let service = service_fn(move |req| {
                                handle(plane.clone(), sessions.clone(), cancel.clone(), req)
                            });
                            if let Err(e) = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await
                            {
                                debug!(error = %e, "web dashboard connection ended with an error");
                            }
                        });
                    }
                    Err(e) => warn!(error = %e, "web dashboard accept failed"),
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        tasks.abort_all();
    }
}

/// Headers every answer of this listener carries: nothing from elsewhere may load, nothing may
/// frame the page, nothing is cached.
fn harden(mut r: Reply) -> Reply {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
             base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: StatusCode, kind: ErrorKind, msg: impl Into<String>) -> Reply {
    json(
        status,
        &ErrorBody {
            error: msg.into(),
            kind,
        },
    )
}

fn unauthorized() -> Reply {
    error(
        StatusCode::UNAUTHORIZED,
        ErrorKind::Unauthorized,
        "log in first (POST /web/login with the admin or read-only token)",
    )
}

fn session_id(req: &Request<hyper::body::Incoming>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| session::cookie(c, session::COOKIE).map(str::to_string))
}

/// Whether the request comes from this listener's own page: no `Origin` (not a browser's
/// cross-origin request), or an `Origin` naming the host the request was sent to.
fn same_origin(req: &Request<hyper::body::Incoming>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(o), Some(h)) => o
            .strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
            .is_some_and(|rest| rest.eq_ignore_ascii_case(h)),
        _ => false,
    }
}

async fn handle(
    plane: Arc<ControlPlane>,
    sessions: Arc<Sessions>,
    cancel: CancellationToken,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, Infallible> {
    let reply = route(plane, sessions, cancel, req).await;
    Ok(harden(reply))
}

async fn route(
    plane: Arc<ControlPlane>,
    sessions: Arc<Sessions>,
    cancel: CancellationToken,
    req: Request<hyper::body::Incoming>,
) -> Reply {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if !path.starts_with("/v1/") && !path.starts_with("/web/") {
        if method != Method::GET && method != Method::HEAD {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorKind::BadRequest,
                "the page's files are read with GET",
            );
        }
        return match assets::find(&path) {
            Some((content_type, body)) => {
                let mut r = Response::new(Full::new(Bytes::from_static(body)));
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                r
            }
            None => error(
                StatusCode::NOT_FOUND,
                ErrorKind::NotFound,
                format!("no page {path}"),
            ),
        };
    }
    if !same_origin(&req) {
        return error(
            StatusCode::FORBIDDEN,
            ErrorKind::Forbidden,
            "the request comes from another site's page",
        );
    }
    match (method.clone(), path.as_str()) {
        (Method::POST, "/web/login") => return login(&sessions, req).await,
        (Method::GET, "/web/session") => {
            return match session_id(&req).and_then(|id| sessions.get(&id)) {
                Some(s) => json(
                    StatusCode::OK,
                    &SessionInfo {
                        role: s.role.name().into(),
                        csrf: s.csrf,
                    },
                ),
                None => unauthorized(),
            };
        }
        _ => {}
    }
    let Some((id, session)) = session_id(&req).and_then(|id| sessions.get(&id).map(|s| (id, s)))
    else {
        return unauthorized();
    };
    if method != Method::GET && method != Method::HEAD {
        let csrf = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !token_matches(csrf.as_bytes(), session.csrf.as_bytes()) {
            return error(
                StatusCode::FORBIDDEN,
                ErrorKind::Forbidden,
                "a change needs the session's X-CSRF-Token header",
            );
        }
    }
    match (method, path.as_str()) {
        (Method::POST, "/web/logout") => {
            sessions.logout(&id);
            let mut r = json(StatusCode::OK, &serde_json::json!({ "logged_out": true }));
            if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        (Method::GET, paths::LIVE_WS) => match plane.hub().live() {
            Some(live) => ws::upgrade(req, live, cancel),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorKind::NotAvailable,
                "the live feed is not available",
            ),
        },
        (_, p) if p.starts_with("/web/") => error(
            StatusCode::NOT_FOUND,
            ErrorKind::NoSuchEndpoint,
            format!("no endpoint {p}"),
        ),
        _ => match crate::control::handle(plane, Access::Web(session.role), req).await {
            Ok(r) => r,
            Err(never) => match never {},
        },
    }
}

async fn login(sessions: &Sessions, req: Request<hyper::body::Incoming>) -> Reply {
    let body = match Limited::new(req.into_body(), MAX_LOGIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                ErrorKind::BadRequest,
                format!("reading the body: {e}"),
            );
        }
    };
    let Ok(login) = serde_json::from_slice::<LoginRequest>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            ErrorKind::BadRequest,
            "the body must be {\"token\": \"…\"}",
        );
    };
    match sessions.login(&login.token) {
        Ok((id, s)) => {
            info!(role = s.role.name(), "web dashboard login");
            let mut r = json(
                StatusCode::OK,
                &SessionInfo {
                    role: s.role.name().into(),
                    csrf: s.csrf,
                },
            );
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&id)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(LoginError::BadToken) => {
            warn!("web dashboard login refused: wrong token");
            tokio::time::sleep(FAILED_LOGIN_DELAY).await;
            error(
                StatusCode::UNAUTHORIZED,
                ErrorKind::Unauthorized,
                "wrong token",
            )
        }
        Err(LoginError::TooMany) => {
            warn!("web dashboard login refused: too many failed logins this minute");
            error(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorKind::Forbidden,
                "too many failed logins: wait a minute",
            )
        }
    }
}
