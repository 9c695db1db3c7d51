//! TLS to the origin: the gateway verifies the origin's certificate like a browser would —
//! against the Mozilla roots (webpki-roots), the system's roots, and the operator's extras —
//! so interception never lowers what the client would have checked.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use rustls::{ClientConfig, RootCertStore, crypto::CryptoProvider, pki_types::CertificateDer};

use super::TlsError;

/// Client configurations for upstream connections, one per ALPN offer.
pub struct UpstreamTls {
    base: ClientConfig,
    by_alpn: Mutex<HashMap<Vec<Vec<u8>>, Arc<ClientConfig>>>,
    /// How many roots are trusted (for the start-up log line).
    pub roots: usize,
}

impl UpstreamTls {
    /// Build the root store and base configuration.
    pub fn new(provider: Arc<CryptoProvider>, extra_roots: &[PathBuf]) -> Result<Self, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::debug!(error = %e, "a system root could not be loaded");
        }
        let (_, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::debug!(ignored, "system roots rejected");
        }
        for path in extra_roots {
            let certs: Vec<CertificateDer<'static>> =
                rustls::pki_types::pem::PemObject::pem_file_iter(path)
                    .map_err(|e| TlsError::Roots(format!("{}: {e}", path.display())))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| TlsError::Roots(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(TlsError::Roots(format!(
                    "{}: no certificate in the file",
                    path.display()
                )));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Roots(format!("{}: {e}", path.display())))?;
            }
        }
        let count = roots.len();
        let base = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Roots(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(UpstreamTls {
            base,
            by_alpn: Mutex::new(HashMap::new()),
            roots: count,
        })
    }

    /// The configuration offering `alpn` upstream.
    pub fn config(&self, alpn: &[Vec<u8>]) -> Arc<ClientConfig> {
        let mut map = match self.by_alpn.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(alpn.to_vec())
            .or_insert_with(|| {
                let mut c = self.base.clone();
                c.alpn_protocols = alpn.to_vec();
                Arc::new(c)
            })
            .clone()
    }
}
