//! Leaf certificates on demand: minted per SNI by the CA, cached (bounded), served to rustls.
use std::sync::Arc;

use moka::sync::Cache;
use rustls::{crypto::CryptoProvider, sign::CertifiedKey};

use super::{TlsError, ca::CertificateAuthority};

/// Mints and caches leaf certificates.
pub struct LeafCerts {
    ca: Arc<CertificateAuthority>,
    provider: Arc<CryptoProvider>,
    cache: Cache<String, Arc<CertifiedKey>>,
    validity_days: u32,
}

impl std::fmt::Debug for LeafCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafCerts")
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

impl LeafCerts {
    /// At most `entries` certificates are kept; each is valid for `validity_days` and is
    /// re-minted well before it expires.
    pub fn new(
        ca: Arc<CertificateAuthority>,
        provider: Arc<CryptoProvider>,
        entries: u64,
        validity_days: u32,
    ) -> Self {
        let refresh = std::time::Duration::from_secs(u64::from(validity_days) * 86_400 / 2);
        LeafCerts {
            ca,
            provider,
            cache: Cache::builder()
                .max_capacity(entries)
                .time_to_live(refresh)
                .build(),
            validity_days,
        }
    }

    /// The certificate for `host`, minted if not cached.
    pub fn get(&self, host: &str) -> Result<Arc<CertifiedKey>, TlsError> {
        let host = host.to_ascii_lowercase();
        if let Some(c) = self.cache.get(&host) {
            return Ok(c);
        }
        let leaf = self.ca.issue(&host, self.validity_days)?;
        let key = self
            .provider
            .key_provider
            .load_private_key(leaf.key)
            .map_err(|e| TlsError::Ca(format!("loading the key for {host}: {e}")))?;
        let certified = Arc::new(CertifiedKey::new(leaf.chain, key));
        self.cache.insert(host, certified.clone());
        Ok(certified)
    }

    /// Certificates in the cache.
    pub fn cached(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_cached_per_host() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(CertificateAuthority::load_or_create(dir.path()).unwrap());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = LeafCerts::new(ca, provider, 2, 30);
        let a = certs.get("a.lab").unwrap();
        let a2 = certs.get("A.lab").unwrap();
        assert!(Arc::ptr_eq(&a, &a2));
        let b = certs.get("b.lab").unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(certs.get("not a name").is_err());
    }
}
