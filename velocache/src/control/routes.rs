//! The admin API's routes: method and path in, JSON out.
//!
//! Errors are always an [`ErrorBody`] with a status that matches its [`ErrorKind`]: 400 bad
//! request, 401 unauthorized, 404 not found / no such endpoint, 503 not available (the service
//! that would answer is not enabled or not built in), 500 failed. Reloads answer 200 with a
//! report that carries their own errors (a refused file is an outcome, not a failed request).
use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use serde::{Serialize, de::DeserializeOwned};
use tracing::info;

use super::{metrics::OPENMETRICS_CONTENT_TYPE, plane::ControlPlane};
use crate::admin::{
    api::{
        CaReport, CacheQuery, CacheShow, DnsFlushRequest, ErrorBody, ErrorKind, FaultView,
        PurgeRequest, RecordStart, RuleView, RulesReport, StopReport, WarmReport, WarmRequest,
        paths,
    },
    seams::{AdminError, RecordAdmin, UrlPattern},
};

#[path = "routes_calls.rs"]
mod calls;
#[path = "routes_live.rs"]
mod live;
pub use live::percent_decode;
use live::query_value;
#[path = "routes_rules.rs"]
mod routes_rules;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;
/// `cache ls` without a limit.
const DEFAULT_LIMIT: usize = 1000;

type Reply = Response<Full<Bytes>>;

struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(kind: ErrorKind, error: impl Into<String>) -> Self {
        let status = match kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::NotFound | ErrorKind::NoSuchEndpoint => StatusCode::NOT_FOUND,
            ErrorKind::NotAvailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        };
        ApiError {
            status,
            body: ErrorBody {
                error: error.into(),
                kind,
            },
        }
    }

    fn not_available(what: &str) -> Self {
        ApiError::new(
            ErrorKind::NotAvailable,
            format!(
                "{what} is not available: the service is not enabled or not built into this daemon"
            ),
        )
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let kind = match &e {
            AdminError::NotFound(_) => ErrorKind::NotFound,
            AdminError::BadRequest(_) => ErrorKind::BadRequest,
            AdminError::Failed(_) => ErrorKind::Failed,
        };
        ApiError::new(kind, e.to_string())
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Reply {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"encoding the answer failed: {e}\",\"kind\":\"failed\"}}")
            .into_bytes()
    });
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn ok<T: Serialize>(value: &T) -> Result<Reply, ApiError> {
    Ok(json(StatusCode::OK, value))
}

async fn body<T: DeserializeOwned>(req: Request<hyper::body::Incoming>) -> Result<T, ApiError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("reading the body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(ErrorKind::BadRequest, format!("bad JSON body: {e}")))
}

/// Whether `presented` is the token, in time independent of where they differ.
pub fn token_matches(presented: &[u8], token: &[u8]) -> bool {
    presented.len() == token.len()
        && presented
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// What a dashboard login may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything the admin API offers (logged in with the admin token).
    Admin,
    /// Read everything, change nothing (logged in with the read-only token).
    ReadOnly,
}

impl Role {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "readonly",
        }
    }
}

/// The endpoints that change nothing although they are `POST` (they take a JSON body).
const READ_ONLY_POSTS: &[&str] = &[
    paths::CACHE_LIST,
    paths::CACHE_SHOW,
    crate::admin::rules_api::paths::RULES_CHECK,
    crate::admin::rules_api::paths::RULES_DRY_RUN,
];

/// Whether a request may change the daemon (a read-only role may not send it).
pub fn changes_something(method: &Method, path: &str) -> bool {
    let reads = method == Method::GET
        || method == Method::HEAD
        || (method == Method::POST && READ_ONLY_POSTS.contains(&path));
    !reads
}

/// What a connection may do.
#[derive(Clone)]
pub enum Access {
    /// The Unix socket: everything (the file mode already restricts it to root).
    Socket,
    /// The TCP admin listener: everything, with the bearer token.
    Token(Arc<str>),
    /// The metrics listener: `GET /metrics` only.
    MetricsOnly,
    /// The dashboard's listener, for a session already checked there (cookie, CSRF token).
    Web(Role),
}

fn authorized(access: &Access, req: &Request<hyper::body::Incoming>) -> Result<(), ApiError> {
    match access {
        Access::Socket => Ok(()),
        Access::Web(Role::Admin) => Ok(()),
        Access::Web(Role::ReadOnly) => {
            if changes_something(req.method(), req.uri().path()) {
                Err(ApiError::new(
                    ErrorKind::Forbidden,
                    "a read-only login cannot change anything (rules, cache, reload, captures)",
                ))
            } else {
                Ok(())
            }
        }
        Access::MetricsOnly => {
            if req.method() == Method::GET && req.uri().path() == paths::METRICS {
                Ok(())
            } else {
                Err(ApiError::new(
                    ErrorKind::NoSuchEndpoint,
                    "this listener serves GET /metrics only",
                ))
            }
        }
        Access::Token(token) => {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            match presented {
                Some(p) if token_matches(p.as_bytes(), token.as_bytes()) => Ok(()),
                _ => Err(ApiError::new(
                    ErrorKind::Unauthorized,
                    "a valid `Authorization: Bearer <token>` header is required",
                )),
            }
        }
    }
}

/// Answer one request.
pub async fn handle(
    plane: Arc<ControlPlane>,
    access: Access,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, Infallible> {
    let reply = match authorized(&access, &req) {
        Ok(()) => route(&plane, req).await,
        Err(e) => Err(e),
    };
    Ok(reply.unwrap_or_else(|e| json(e.status, &e.body)))
}

async fn route(
    plane: &Arc<ControlPlane>,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, ApiError> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if routes_rules::handles(&path) {
        return routes_rules::route_rules(plane, &method, &path, req).await;
    }
    if path.starts_with("/v1/calls/") {
        return calls::route_calls(plane, &method, &path, req).await;
    }
    if let Some(reply) = live::route_live(plane, &method, &path, &req) {
        return reply;
    }
    let known = [
        paths::STATUS,
        paths::STATS,
        paths::RELOAD,
        paths::STOP,
        paths::RULES,
        paths::RULES_RELOAD,
        paths::CACHE_LIST,
        paths::CACHE_SHOW,
        paths::CACHE_PURGE,
        paths::CACHE_WARM,
        paths::CALLS,
        paths::CA,
        paths::CA_ROTATE,
        paths::ORIGINS,
        paths::RECORD_START,
        paths::RECORD_STOP,
        paths::RECORD,
        paths::DNS_FLUSH,
        paths::PLUGINS,
        paths::PLUGINS_RELOAD,
        paths::METRICS,
        paths::LIVE_HISTORY,
        paths::LIVE_INSPECT,
        paths::ANALYTICS,
        paths::DNS_SHOW,
    ];
    match (method.clone(), path.as_str()) {
        (Method::GET, paths::METRICS) => {
            let mut r = Response::new(Full::new(Bytes::from(plane.metrics_text())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            Ok(r)
        }
        (Method::GET, paths::STATUS) => ok(&plane.status().await),
        (Method::GET, paths::STATS) => {
            let stats = plane
                .stats()
                .map_err(|e| ApiError::new(ErrorKind::Failed, e.to_string()))?;
            ok(&stats)
        }
        (Method::POST, paths::RELOAD) => ok(&plane.reload("api").await),
        (Method::POST, paths::STOP) => {
            let report = StopReport {
                stopping: true,
                active_sessions: plane.flows.active() as u64,
                grace_secs: plane.config().daemon.shutdown_grace_secs.0,
            };
            info!(signal = "api", "stop requested through the admin API");
            plane.request_stop();
            ok(&report)
        }
        (Method::GET, paths::RULES) => ok(&rules_report(plane)),
        (Method::POST, paths::RULES_RELOAD) => ok(&plane.reload_rules().await),
        (Method::POST, paths::CACHE_LIST) => {
            let q: CacheQuery = body(req).await?;
            let cache = plane
                .hub
                .cache()
                .ok_or_else(|| ApiError::not_available("the HTTP cache"))?;
            let pattern = q.pattern.as_deref().map(UrlPattern::new).transpose()?;
            let limit = if q.limit == 0 { DEFAULT_LIMIT } else { q.limit };
            ok(&cache.list(pattern.as_ref(), limit).await?)
        }
        (Method::POST, paths::CACHE_SHOW) => {
            let q: CacheShow = body(req).await?;
            let cache = plane
                .hub
                .cache()
                .ok_or_else(|| ApiError::not_available("the HTTP cache"))?;
            ok(&cache.show(&q.url).await?)
        }
        (Method::POST, paths::CACHE_PURGE) => {
            let q: PurgeRequest = body(req).await?;
            let pattern = UrlPattern::new(&q.pattern)?;
            let cache = plane
                .hub
                .cache()
                .ok_or_else(|| ApiError::not_available("the HTTP cache"))?;
            let report = cache.purge(&pattern, q.shared).await?;
            info!(service = "http", pattern = %q.pattern, purged = report.purged, bytes = report.bytes,
                "cache purged through the admin API");
            ok(&report)
        }
        (Method::POST, paths::CACHE_WARM) => warm(plane, body(req).await?).await,
        (Method::GET, paths::CALLS) => {
            let calls = plane
                .hub
                .calls()
                .ok_or_else(|| ApiError::not_available("SIP call observation"))?;
            ok(&calls.calls().await?)
        }
        (Method::POST, paths::DNS_FLUSH) => {
            let q: DnsFlushRequest = body(req).await?;
            let dns = plane
                .hub
                .dns()
                .ok_or_else(|| ApiError::not_available("the DNS cache"))?;
            let report = dns.flush(q.name.as_deref())?;
            info!(
                service = "dns",
                name = q.name.as_deref().unwrap_or("*"),
                entries = report.entries,
                kernel = report.kernel,
                "DNS answers flushed through the admin API"
            );
            ok(&report)
        }
        (Method::GET, paths::PLUGINS) => {
            let plugins = plane
                .hub
                .plugins()
                .ok_or_else(|| ApiError::not_available("plugins"))?;
            ok(&plugins.list())
        }
        (Method::POST, paths::PLUGINS_RELOAD) => {
            let plugins = plane
                .hub
                .plugins()
                .ok_or_else(|| ApiError::not_available("plugins"))?;
            let report = plugins.reload().await?;
            info!(
                loaded = ?report.loaded,
                refused = report.refused.len(),
                "plugins reloaded through the admin API"
            );
            // The ports the new set claims go into the kernel's port map (the plugin listener
            // is bound since start); a failure is logged there and the claims in force stay.
            let _ = plane.set_port_claims(plugins.tcp_ports()).await;
            ok(&report)
        }
        (Method::GET, paths::ORIGINS) => {
            let origins = plane
                .hub
                .origins()
                .ok_or_else(|| ApiError::not_available("origin health"))?;
            ok(&origins.origins())
        }
        (Method::GET, paths::CA) => {
            let ca = plane
                .hub
                .ca()
                .ok_or_else(|| ApiError::not_available("the local CA (HTTPS interception)"))?;
            ok(&CaReport { pem: ca.ca_pem() })
        }
        (Method::POST, paths::CA_ROTATE) => {
            let ca = plane
                .hub
                .ca()
                .ok_or_else(|| ApiError::not_available("the local CA (HTTPS interception)"))?;
            let pem = ca.rotate()?;
            info!(service = "https", "local CA rotated through the admin API");
            ok(&CaReport { pem })
        }
        (Method::POST, paths::RECORD_START) => {
            let q: RecordStart = body(req).await?;
            ok(&recorder(plane)?.start(&q)?)
        }
        (Method::POST, paths::RECORD_STOP) => ok(&recorder(plane)?.stop().await?),
        (Method::GET, paths::RECORD) => ok(&recorder(plane)?.status()),
        (m, p) if known.contains(&p) => Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("{p} does not take {m}"),
        )),
        (_, p) => Err(ApiError::new(
            ErrorKind::NoSuchEndpoint,
            format!("no endpoint {p}"),
        )),
    }
}

async fn warm(plane: &Arc<ControlPlane>, req: WarmRequest) -> Result<Reply, ApiError> {
    let urls = if req.urls.is_empty() {
        plane.rules.current().warmup_urls.clone()
    } else {
        req.urls
    };
    if urls.is_empty() {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            "no URLs given, and the rules file lists no warmup_urls",
        ));
    }
    if let Some(bad) = urls
        .iter()
        .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
    {
        return Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("`{bad}` is not an http:// or https:// URL"),
        ));
    }
    if plane.hub.cache().is_none() {
        return Err(ApiError::not_available("the HTTP cache"));
    }
    let total = urls.len() as u64;
    if req.wait {
        let results = plane
            .warmup
            .run(urls, "api")
            .await
            .map_err(|_| ApiError::not_available("the HTTP cache"))?;
        ok(&WarmReport { total, results })
    } else {
        plane.warmup.spawn(urls, "api");
        Ok(json(
            StatusCode::ACCEPTED,
            &WarmReport {
                total,
                results: Vec::new(),
            },
        ))
    }
}

fn recorder(plane: &ControlPlane) -> Result<Arc<dyn RecordAdmin>, ApiError> {
    plane
        .hub
        .record()
        .ok_or_else(|| ApiError::not_available("recording (the HTTP proxy)"))
}

fn rules_report(plane: &ControlPlane) -> RulesReport {
    let set = plane.rules.current();
    RulesReport {
        file: plane.rules.file().map(|f| f.display().to_string()),
        rules: set
            .rules
            .iter()
            .map(|r| RuleView {
                name: r.name.clone(),
                line: r.line,
                action: r.action.name().into(),
                match_host: r.hosts.iter().map(|h| h.as_str().to_string()).collect(),
                match_path: r.paths.iter().map(|p| p.as_str().to_string()).collect(),
                match_method: r.methods.clone(),
                match_content_type: r
                    .content_types
                    .iter()
                    .map(|p| p.as_str().to_string())
                    .collect(),
                services: r.services.iter().map(|s| s.name().to_string()).collect(),
                ttl_override_secs: r.ttl_override.map(|d| d.as_secs()),
                ghost: r.ghost,
                health_check: r
                    .health_check
                    .as_ref()
                    .map(|h| format!("GET {} every {} ms", h.path, h.interval.as_millis())),
                fault: r.fault.map(|f| FaultView {
                    delay_ms: f.delay.map(|d| d.as_millis() as u64),
                    abort_status: f.abort.map(|a| a.status),
                    abort_percent: f.abort.map(|a| a.percent),
                    bandwidth_kbps: f.bandwidth_kbps,
                }),
            })
            .collect(),
        warmup_urls: set.warmup_urls.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(token_matches(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!token_matches(b"0123456789abcdeX", b"0123456789abcdef"));
        assert!(!token_matches(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!token_matches(b"", b"0123456789abcdef"));
    }

    #[test]
    fn read_only_roles_may_read_and_check_but_not_change() {
        assert!(!changes_something(&Method::GET, paths::RULES));
        assert!(!changes_something(&Method::POST, paths::CACHE_LIST));
        assert!(!changes_something(&Method::POST, "/v1/rules/check"));
        assert!(changes_something(&Method::POST, paths::RULES_RELOAD));
        assert!(changes_something(&Method::POST, "/v1/rules/apply"));
        assert!(changes_something(&Method::POST, paths::CACHE_PURGE));
        assert!(changes_something(&Method::DELETE, paths::CACHE_LIST));
    }
}
