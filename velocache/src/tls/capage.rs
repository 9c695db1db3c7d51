//! The page that lets a client trust the gateway's CA in one step (like mitmproxy's mitm.it).
//!
//! A phase of the HTTP proxy: a request head enters its `request_filter`; for requests whose
//! `Host` is `[tls] ca_page_host` (any destination address: the name does not need to resolve
//! anywhere else) the page leaves as the answer, and nothing reaches an origin or the cache.
//! `/` is a short page with per-OS instructions; `/velocache-ca.pem` and `/velocache-ca.crt`
//! are the certificate in PEM and DER.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header, request};
use http_body_util::{BodyExt as _, Full};

use super::TlsShared;
use crate::http::{Body, Ctx, Phase, ProxyError, Step};

/// The CA page as a phase of the HTTP proxy: requests for `[tls] ca_page_host` are answered
/// here and never reach an origin or the cache.
pub struct CaPage {
    shared: Arc<TlsShared>,
    host: String,
}

impl CaPage {
    /// The page for `host`, handing out `shared`'s current CA.
    pub fn new(shared: Arc<TlsShared>, host: &str) -> CaPage {
        CaPage {
            shared,
            host: host.to_ascii_lowercase(),
        }
    }
}

impl Phase for CaPage {
    fn name(&self) -> &str {
        "ca_page"
    }

    fn request_filter<'a>(
        &'a self,
        ctx: &'a mut Ctx,
        req: &'a mut request::Parts,
    ) -> Step<'a, Result<Option<Response<Body>>, ProxyError>> {
        Step::Ready(Ok(self.answer(ctx, req)))
    }
}

impl CaPage {
    fn answer(&self, ctx: &Ctx, req: &request::Parts) -> Option<Response<Body>> {
        let name = ctx
            .host
            .rsplit_once(':')
            .map_or(ctx.host.as_str(), |(h, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    h
                } else {
                    ctx.host.as_str()
                }
            });
        if !name.eq_ignore_ascii_case(&self.host) {
            return None;
        }
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let page = ca_page(path, &self.host, &self.shared.ca_pem());
        let mut resp = Response::new(
            Full::new(Bytes::from(page.body))
                .map_err(|e| match e {})
                .boxed_unsync(),
        );
        *resp.status_mut() = StatusCode::from_u16(page.status).unwrap_or(StatusCode::OK);
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(page.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(d) = page.disposition {
            h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(d));
        }
        Some(resp)
    }
}

/// One response of the CA page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaPageResponse {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra `Content-Disposition` for downloads.
    pub disposition: Option<&'static str>,
    /// Body.
    pub body: Vec<u8>,
}

/// Answer `path` on the CA page with the CA certificate `pem`.
pub fn ca_page(path: &str, host: &str, pem: &str) -> CaPageResponse {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/velocache-ca.pem" => CaPageResponse {
            status: 200,
            content_type: "application/x-pem-file",
            disposition: Some("attachment; filename=\"velocache-ca.pem\""),
            body: pem.as_bytes().to_vec(),
        },
        "/velocache-ca.crt" => {
            match rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()) {
                Ok(der) => {
                    let der: rustls::pki_types::CertificateDer<'static> = der;
                    CaPageResponse {
                        status: 200,
                        content_type: "application/x-x509-ca-cert",
                        disposition: Some("attachment; filename=\"velocache-ca.crt\""),
                        body: der.to_vec(),
                    }
                }
                Err(_) => not_found(),
            }
        }
        "/" | "/index.html" => CaPageResponse {
            status: 200,
            content_type: "text/html; charset=utf-8",
            disposition: None,
            body: html(host).into_bytes(),
        },
        _ => not_found(),
    }
}

fn not_found() -> CaPageResponse {
    CaPageResponse {
        status: 404,
        content_type: "text/plain; charset=utf-8",
        disposition: None,
        body: b"not found\n".to_vec(),
    }
}

fn html(host: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>VeloCache CA</title></head>
<body>
<h1>Trust this gateway's VeloCache CA</h1>
<p>This gateway caches HTTPS downloads for hosts its operator chose. To let it, your device
must trust its local certificate authority. Hosts the operator did not choose are never
decrypted, whether or not you install it.</p>
<p>Download: <a href="http://{host}/velocache-ca.pem">PEM</a> ·
<a href="http://{host}/velocache-ca.crt">DER (.crt)</a></p>
<h2>Debian / Ubuntu</h2>
<pre>curl -o /usr/local/share/ca-certificates/velocache-ca.crt http://{host}/velocache-ca.pem
sudo update-ca-certificates</pre>
<h2>Fedora / RHEL</h2>
<pre>curl -o /etc/pki/ca-trust/source/anchors/velocache-ca.pem http://{host}/velocache-ca.pem
sudo update-ca-trust</pre>
<h2>macOS</h2>
<pre>curl -O http://{host}/velocache-ca.pem
sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain velocache-ca.pem</pre>
<h2>Windows (administrator PowerShell)</h2>
<pre>Invoke-WebRequest http://{host}/velocache-ca.crt -OutFile velocache-ca.crt
Import-Certificate -FilePath velocache-ca.crt -CertStoreLocation Cert:\LocalMachine\Root</pre>
<h2>Containers, Python, Node</h2>
<pre>export SSL_CERT_FILE=/path/to/velocache-ca.pem      # OpenSSL-based tools
export REQUESTS_CA_BUNDLE=/path/to/velocache-ca.pem # Python requests
export NODE_EXTRA_CA_CERTS=/path/to/velocache-ca.pem</pre>
</body></html>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_instructions_and_the_certificate_in_both_encodings() {
        let dir = tempfile::tempdir().unwrap();
        let ca = super::super::CertificateAuthority::load_or_create(dir.path()).unwrap();
        let page = ca_page("/", "velocache.ca", ca.cert_pem());
        assert_eq!(page.status, 200);
        assert!(
            String::from_utf8(page.body)
                .unwrap()
                .contains("update-ca-certificates")
        );
        let pem = ca_page("/velocache-ca.pem", "velocache.ca", ca.cert_pem());
        assert_eq!(pem.body, ca.cert_pem().as_bytes());
        let der = ca_page("/velocache-ca.crt?x=1", "velocache.ca", ca.cert_pem());
        assert_eq!(der.body, ca.cert_der().to_vec());
        assert_eq!(
            ca_page("/etc/passwd", "velocache.ca", ca.cert_pem()).status,
            404
        );
    }
}
