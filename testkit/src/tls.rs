//! A private certificate authority for tests, and the certificates it issues: good ones,
//! expired ones, ones for another host, written as PEM files for holdalld's `--tls-cert`,
//! `--tls-key` and the client's `--ca`.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The CA: its certificate's PEM file and what signs with it.
pub struct TestCa {
    /// The CA certificate, for `--ca`.
    pub pem: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files.
pub struct Issued {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
}

/// How long an issued certificate is valid.
pub enum Validity {
    /// From yesterday for a year.
    Current,
    /// It ended yesterday.
    Expired,
}

impl TestCa {
    /// A new CA whose certificate is written to `DIR/ca.pem`.
    pub fn new(dir: &Path) -> TestCa {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // OpenSSL takes a leaf whose issuer reads as its own subject for self-signed, so
        // the CA and its leaves carry different names.
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Holdall test CA");
        let cert = params.self_signed(&key).expect("the CA certificate");
        let pem = dir.join("ca.pem");
        std::fs::write(&pem, cert.pem()).expect("writing ca.pem");
        TestCa {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `host` (a name or an IP address), written to `DIR/NAME.pem` and
    /// `DIR/NAME.key`; each call makes a new key.
    pub fn issue(&self, dir: &Path, name: &str, host: &str, validity: Validity) -> Issued {
        let key = KeyPair::generate().expect("a leaf key");
        let mut params = CertificateParams::new(vec![host.to_string()]).expect("leaf params");
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        let (from, to) = match validity {
            Validity::Current => (now - day, now + 365 * day),
            Validity::Expired => (now - 30 * day, now - day),
        };
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, host.to_string());
        params.not_before = from.into();
        params.not_after = to.into();
        let cert = params.signed_by(&key, &self.issuer).expect("signing");
        let issued = Issued {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("writing the certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("writing the key");
        issued
    }
}
