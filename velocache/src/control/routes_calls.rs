//! The admin API's call routes (`/v1/calls/…` below the list itself): one call's ladder and
//! media figures, starting and stopping its capture, and its pcap. Requests come from
//! `routes::route`; answers go back as JSON, or as `application/vnd.tcpdump.pcap` for the pcap.
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tracing::info;

use super::{ApiError, Reply, body, ok};
use crate::{
    admin::{
        CallsAdmin,
        api::ErrorKind,
        calls_api::{CaptureRequest, calls_paths},
    },
    control::plane::ControlPlane,
};

/// The pcap media type (IANA).
pub const PCAP_CONTENT_TYPE: &str = "application/vnd.tcpdump.pcap";

fn observer(plane: &ControlPlane) -> Result<Arc<dyn CallsAdmin>, ApiError> {
    plane
        .hub
        .calls()
        .ok_or_else(|| ApiError::not_available("SIP call observation"))
}

/// The `call_id` parameter of a query string.
fn call_id_param(query: Option<&str>) -> Result<String, ApiError> {
    let missing = || ApiError::new(ErrorKind::BadRequest, "the query needs call_id=CALL-ID");
    let id = super::query_value(query, "call_id")?.ok_or_else(missing)?;
    if id.is_empty() {
        return Err(missing());
    }
    Ok(id)
}

fn call_id_body(q: CaptureRequest) -> Result<String, ApiError> {
    if q.call_id.is_empty() {
        return Err(ApiError::new(ErrorKind::BadRequest, "call_id is empty"));
    }
    Ok(q.call_id)
}

/// Answer a request below `/v1/calls/`.
pub(super) async fn route_calls(
    plane: &Arc<ControlPlane>,
    method: &Method,
    path: &str,
    req: Request<hyper::body::Incoming>,
) -> Result<Reply, ApiError> {
    let query = req.uri().query().map(str::to_string);
    match (method.clone(), path) {
        (Method::GET, calls_paths::SHOW) => {
            let id = call_id_param(query.as_deref())?;
            ok(&observer(plane)?.show(&id)?)
        }
        (Method::POST, calls_paths::CAPTURE) => {
            let id = call_id_body(body(req).await?)?;
            let status = observer(plane)?.capture_start(&id)?;
            info!(service = "sip", call_id = %id, "call capture started through the admin API");
            ok(&status)
        }
        (Method::POST, calls_paths::CAPTURE_STOP) => {
            let id = call_id_body(body(req).await?)?;
            ok(&observer(plane)?.capture_stop(&id)?)
        }
        (Method::GET, calls_paths::PCAP) => {
            let id = call_id_param(query.as_deref())?;
            let file = observer(plane)?.pcap(&id)?;
            let mut r = Response::new(Full::new(Bytes::from(file)));
            *r.status_mut() = StatusCode::OK;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(PCAP_CONTENT_TYPE),
            );
            // The Call-ID may hold anything: the file name keeps only safe characters.
            let name: String = id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .take(100)
                .collect();
            if let Ok(v) =
                header::HeaderValue::from_str(&format!("attachment; filename=\"{name}.pcap\""))
            {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            Ok(r)
        }
        (
            m,
            p @ (calls_paths::SHOW
            | calls_paths::CAPTURE
            | calls_paths::CAPTURE_STOP
            | calls_paths::PCAP),
        ) => Err(ApiError::new(
            ErrorKind::BadRequest,
            format!("{p} does not take {m}"),
        )),
        (_, p) => Err(ApiError::new(
            ErrorKind::NoSuchEndpoint,
            format!("no endpoint {p}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_percent_decoded_from_the_query() {
        assert_eq!(
            call_id_param(Some("x=1&call_id=1-2%4010.0.0.1")).ok(),
            Some("1-2@10.0.0.1".to_string())
        );
        assert_eq!(call_id_param(Some("call_id=a+b")).ok(), Some("a b".into()));
        assert!(call_id_param(Some("call_id=%zz")).is_err());
        assert!(call_id_param(Some("call_id=%4")).is_err());
        assert!(call_id_param(Some("call_id=%ff")).is_err(), "not UTF-8");
        assert!(call_id_param(Some("call_id=")).is_err());
        assert!(call_id_param(None).is_err());
    }
}

#[cfg(test)]
#[path = "routes_calls_tests.rs"]
mod api_tests;
