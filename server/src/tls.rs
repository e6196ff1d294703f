//! HTTPS: the certificate and key every shard serves with (rustls on ring, HTTP/1.1 by
//! ALPN), swapped in place on SIGHUP so that connections, open or new, never see a gap.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// The first byte of every TLS record that opens a handshake (ContentType handshake).
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// The pair of PEM files holdalld serves HTTPS with, and the pair loaded from them last.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
}

/// The certified key handshakes use now; SIGHUP replaces it.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Tls {
    /// Loads the pair: a missing, unreadable or mismatched file is an error naming it.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Tls>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = certified_key(cert, key, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(certified))));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current,
            config: Arc::new(config),
        }))
    }

    /// Reads the files again and, only if the new pair is good, serves it from the next
    /// handshake on; established connections keep their session.
    pub fn reload(&self) -> Result<()> {
        let provider = self.config.crypto_provider().clone();
        let certified = certified_key(&self.cert, &self.key, &provider)?;
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// What accepts a TLS connection with the current pair.
    pub fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        futures_rustls::TlsAcceptor::from(self.config.clone())
    }

    /// The certificate file, for logs.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

/// The chain in `cert` with the private key in `key`, checked to belong together.
fn certified_key(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the TLS certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the TLS certificate {}", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "the TLS certificate {} holds no certificate",
            cert.display()
        );
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS key {}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).with_context(|| {
        format!(
            "the TLS key {} does not fit the certificate {}",
            key.display(),
            cert.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdall_testkit::tls::{TestCa, Validity};

    #[test]
    fn bad_files_are_named_and_a_bad_reload_keeps_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let a = ca.issue(dir.path(), "a", "a.test", Validity::Current);
        let b = ca.issue(dir.path(), "b", "b.test", Validity::Current);
        let missing = dir.path().join("missing.pem");
        let err = format!("{:#}", Tls::load(&missing, &a.key).err().unwrap());
        assert!(err.contains("missing.pem"), "{err}");
        let err = format!("{:#}", Tls::load(&a.cert, &b.key).err().unwrap());
        assert!(err.contains("does not fit"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = format!("{:#}", Tls::load(&empty, &a.key).err().unwrap());
        assert!(err.contains("holds no certificate"), "{err}");

        let tls = Tls::load(&a.cert, &a.key).unwrap();
        let served = || tls.current.0.read().unwrap().clone();
        let before = served();
        std::fs::write(&a.key, "not a key").unwrap();
        assert!(tls.reload().is_err());
        assert!(
            Arc::ptr_eq(&before, &served()),
            "a bad key keeps the old pair"
        );
        std::fs::copy(&b.key, &a.key).unwrap();
        assert!(
            tls.reload().is_err(),
            "a key of another certificate is refused"
        );
        assert!(Arc::ptr_eq(&before, &served()));
        ca.issue(dir.path(), "a", "a.test", Validity::Current);
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &served()), "a good pair is taken");
    }
}
