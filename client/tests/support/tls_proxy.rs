//! A TLS-terminating reverse proxy in front of holdalld, as a user would put nginx or Caddy
//! there, with a private CA made for the test. HTTP/1.1 with Content-Length only, one
//! request at a time per connection: what the client and holdalld speak.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// The proxy: `https://127.0.0.1:PORT`, and the PEM file of the CA that signed its
/// certificate.
pub struct TlsProxy {
    /// Its URL.
    pub url: String,
    /// The private CA, for `--ca`.
    pub ca_pem: PathBuf,
}

impl TlsProxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`); its CA is written into `dir`.
    pub fn start(upstream: &str, dir: &Path) -> TlsProxy {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let ca_pem = dir.join("private-ca.pem");
        std::fs::write(&ca_pem, ca_cert.pem()).unwrap();

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let config = Arc::new(
            ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, upstream) = (config.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let tls = StreamOwned::new(ServerConnection::new(config).unwrap(), tcp);
                    let _ = forward(tls, &upstream);
                });
            }
        });
        TlsProxy { url, ca_pem }
    }
}

/// Relays request after request from the TLS side to a plain connection upstream.
fn forward(tls: StreamOwned<ServerConnection, TcpStream>, upstream: &str) -> std::io::Result<()> {
    let mut client = BufReader::new(tls);
    let backend = TcpStream::connect(upstream)?;
    let mut backend_reader = BufReader::new(backend.try_clone()?);
    let mut backend_writer = backend;
    loop {
        let Some(request) = message(&mut client)? else {
            return Ok(());
        };
        backend_writer.write_all(&request)?;
        let Some(response) = message(&mut backend_reader)? else {
            return Ok(());
        };
        client.get_mut().write_all(&response)?;
        client.get_mut().flush()?;
    }
}

/// One HTTP/1.1 message (head and Content-Length body), or None at the end of the stream.
fn message(from: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if from.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        out.extend_from_slice(line.as_bytes());
        if line == "\r\n" {
            break;
        }
    }
    let start = out.len();
    out.resize(start + length, 0);
    from.read_exact(&mut out[start..])?;
    Ok(Some(out))
}
