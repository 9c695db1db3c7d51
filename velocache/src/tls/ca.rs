//! The local certificate authority that signs interception certificates.
//!
//! Generated with rcgen on first start into `<ca_dir>/ca.crt` (mode 0644) and `ca.key`
//! (mode 0600, directory 0700); loaded from there afterwards. The key is never logged and never
//! leaves the gateway; only the certificate is exported (`velocache ca export`, the CA page).
//! Rotation writes a new pair atomically and keeps the previous certificate as `ca.crt.old`, so
//! clients can be moved over.
use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::TlsError;

const CERT_FILE: &str = "ca.crt";
const KEY_FILE: &str = "ca.key";

/// A leaf certificate chain and its key, ready for rustls.
pub struct Leaf {
    /// Leaf first, then the CA.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

/// The CA: its certificate and a signer.
pub struct CertificateAuthority {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CertificateAuthority")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn io_err<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> TlsError + 'a {
    move |source| TlsError::CaFile {
        path: path.to_path_buf(),
        what,
        source,
    }
}

impl CertificateAuthority {
    /// Load the CA from `dir`, or create one there if it has none.
    pub fn load_or_create(dir: &Path) -> Result<Self, TlsError> {
        let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        if cert.exists() && key.exists() {
            return Self::load(dir);
        }
        let ca = Self::create(dir)?;
        tracing::info!(dir = %dir.display(), "generated a new local CA");
        Ok(ca)
    }

    fn load(dir: &Path) -> Result<Self, TlsError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let cert_pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path, "reading"))?;
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path, "reading"))?;
        let mode = fs::metadata(&key_path)
            .map_err(io_err(&key_path, "inspecting"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %key_path.display(), "CA key is readable by others; fixing to 0600");
            fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600))
                .map_err(io_err(&key_path, "restricting"))?;
        }
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| TlsError::Ca(format!("{}: not a private key: {e}", key_path.display())))?;
        let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| {
                TlsError::Ca(format!("{}: not a certificate: {e}", cert_path.display()))
            })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| TlsError::Ca(format!("{}: {e}", cert_path.display())))?;
        Ok(CertificateAuthority {
            dir: dir.to_path_buf(),
            cert_pem,
            cert_der,
            issuer,
        })
    }

    fn create(dir: &Path) -> Result<Self, TlsError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir, "creating"))?;
        let key = KeyPair::generate().map_err(|e| TlsError::Ca(format!("key generation: {e}")))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "gateway".into());
        dn.push(DnType::CommonName, format!("VeloCache local CA ({host})"));
        dn.push(DnType::OrganizationName, "VeloCache");
        params.distinguished_name = dn;
        // Path length 0: it signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|e| TlsError::Ca(format!("self-signing: {e}")))?;
        let cert_pem = cert.pem();
        write_atomic(&dir.join(KEY_FILE), key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT_FILE), cert_pem.as_bytes(), 0o644)?;
        Ok(CertificateAuthority {
            dir: dir.to_path_buf(),
            cert_der: cert.der().clone(),
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Replace the CA with a new one; the old certificate is kept as `ca.crt.old`.
    pub fn rotate(dir: &Path) -> Result<Self, TlsError> {
        let cert = dir.join(CERT_FILE);
        if cert.exists() {
            let old = dir.join("ca.crt.old");
            fs::copy(&cert, &old).map_err(io_err(&old, "keeping the old certificate"))?;
        }
        let ca = Self::create(dir)?;
        tracing::info!(dir = %dir.display(), "rotated the local CA");
        Ok(ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Where the CA lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issue a leaf certificate for `host` (a DNS name or an IP address).
    pub fn issue(&self, host: &str, validity_days: u32) -> Result<Leaf, TlsError> {
        let key = KeyPair::generate().map_err(|e| TlsError::Ca(format!("key generation: {e}")))?;
        let mut params = CertificateParams::default();
        // Only names a TLS client could have sent as SNI (or an address): never mint for junk.
        if rustls::pki_types::ServerName::try_from(host).is_err() {
            return Err(TlsError::Ca(format!("`{host}` is not a host name")));
        }
        let san = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.to_string()
                    .try_into()
                    .map_err(|e| TlsError::Ca(format!("`{host}` is not a DNS name: {e}")))?,
            ),
        };
        params.subject_alt_names = vec![san];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, host);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        // Back-dated a day: clients with a slightly slow clock must not see "not yet valid".
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(i64::from(validity_days));
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| TlsError::Ca(format!("signing for {host}: {e}")))?;
        Ok(Leaf {
            chain: vec![cert.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        })
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, non-zero leading byte: a well-formed DER INTEGER of full length.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Write `data` to `path` via a temporary file and a rename, with `mode` from the start (the
/// key is never briefly world-readable).
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp, "creating"))?;
    f.write_all(data).map_err(io_err(&tmp, "writing"))?;
    f.sync_all().map_err(io_err(&tmp, "syncing"))?;
    fs::rename(&tmp, path).map_err(io_err(path, "renaming into place"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let a = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        let mode = fs::metadata(ca_dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = fs::metadata(&ca_dir).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        let b = CertificateAuthority::load_or_create(&ca_dir).unwrap();
        assert_eq!(a.cert_pem(), b.cert_pem(), "second start reuses the CA");
        assert!(!format!("{b:?}").contains("PRIVATE"));
        let c = CertificateAuthority::rotate(&ca_dir).unwrap();
        assert_ne!(c.cert_pem(), a.cert_pem());
        assert!(ca_dir.join("ca.crt.old").exists());
    }

    #[test]
    fn issued_leaves_verify_against_the_ca_for_their_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path()).unwrap();
        let leaf = ca.issue("registry.lab", 30).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert_der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier as _;
        let now = rustls::pki_types::UnixTime::now();
        let ok = verifier.verify_server_cert(
            &leaf.chain[0],
            &leaf.chain[1..],
            &rustls::pki_types::ServerName::try_from("registry.lab").unwrap(),
            &[],
            now,
        );
        assert!(ok.is_ok(), "{ok:?}");
        let wrong = verifier.verify_server_cert(
            &leaf.chain[0],
            &leaf.chain[1..],
            &rustls::pki_types::ServerName::try_from("other.lab").unwrap(),
            &[],
            now,
        );
        assert!(wrong.is_err());
    }
}
