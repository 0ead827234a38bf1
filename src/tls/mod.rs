//! Transport security for the gRPC listener: turning the PEM files the
//! settings name into a rustls server configuration, and a caller's
//! certificate into the identity the audit trail records.
//!
//! The configuration uses aws-lc-rs, as every other TLS client in the crate
//! does, offers only `h2` (gRPC needs HTTP/2), and, when a client CA is
//! configured, refuses callers without a certificate that chains to it.
//! Keeping it current while serving is [`reload`]'s job; accepting
//! connections with it is [`incoming`]'s.

mod incoming;
mod reload;

use crate::settings::TlsFiles;
use anyhow::Context as _;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

/// The listener's TLS configuration, as first loaded at start-up.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    loaded: Loaded,
}

impl ServerTls {
    /// Reads the files and builds the configuration; an error names the
    /// variable and the path at fault.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Self> {
        let contents = Contents::read(files)?;
        let loaded = contents.load(files)?;
        Ok(Self {
            files: files.clone(),
            loaded,
        })
    }

    /// Whether callers must present a client certificate.
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Connections on `listener` that completed a TLS handshake, for tonic's
    /// `serve_with_incoming*`. The files are re-read until `stop` or until
    /// the stream is dropped.
    pub fn incoming(
        self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> impl Stream<Item = Result<TlsStream<TcpStream>, Infallible>> {
        let configs = reload::spawn(self.files, self.loaded, stop);
        incoming::accept(listener, configs)
    }
}

/// The caller's identity from the certificate chain its handshake proved:
/// the leaf's subject as an RFC 4514 string, e.g. `CN=billing-service,O=Example`.
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Option<String> {
    use x509_cert::der::Decode as _;
    let leaf = chain.first()?;
    match x509_cert::Certificate::from_der(leaf) {
        Ok(certificate) => Some(certificate.tbs_certificate().subject().to_string()),
        Err(error) => {
            // The handshake accepted it, so this is a parser disagreement;
            // the call is still recorded, without the identity.
            tracing::warn!(error = %error, "the client certificate's subject could not be read");
            None
        }
    }
}

/// A configuration, and which file contents it was built from.
#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    fingerprint: Fingerprint,
}

/// SHA-256 of the files' contents: holding this rather than the contents
/// keeps a second copy of the private key out of memory.
type Fingerprint = [u8; 32];

/// The files as read at one moment.
struct Contents {
    cert: Vec<u8>,
    key: SecretSlice<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    fn read(files: &TlsFiles) -> anyhow::Result<Self> {
        Ok(Self {
            cert: read_file("GATEWAY_TLS_CERT_FILE", &files.cert)?,
            key: read_file("GATEWAY_TLS_KEY_FILE", &files.key)?.into(),
            client_ca: match &files.client_ca {
                Some(path) => Some(read_file("GATEWAY_TLS_CLIENT_CA_FILE", path)?),
                None => None,
            },
        })
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut digest = Sha256::new();
        // Length-prefixed, so that bytes moving from one file to the next
        // still count as a change.
        let parts = [
            Some(self.cert.as_slice()),
            Some(self.key.expose_secret()),
            self.client_ca.as_deref(),
        ];
        for part in parts {
            let part = part.unwrap_or_default();
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        digest.finalize().into()
    }

    /// Builds the server configuration these contents describe.
    fn load(&self, files: &TlsFiles) -> anyhow::Result<Loaded> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let cert_path = files.cert.display();
        let key_path = files.key.display();
        let chain = certificates(&self.cert)
            .with_context(|| format!("GATEWAY_TLS_CERT_FILE {cert_path}"))?;
        let key = PrivateKeyDer::from_pem_slice(self.key.expose_secret())
            .map_err(|e| {
                anyhow::anyhow!("holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")
            })
            .with_context(|| format!("GATEWAY_TLS_KEY_FILE {key_path}"))?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS provider supports no safe protocol version")?;
        let builder = match (&self.client_ca, &files.client_ca) {
            (Some(pem), Some(path)) => builder.with_client_cert_verifier(
                client_verifier(pem, provider)
                    .with_context(|| format!("GATEWAY_TLS_CLIENT_CA_FILE {}", path.display()))?,
            ),
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).with_context(|| {
            format!("GATEWAY_TLS_KEY_FILE {key_path} cannot serve the certificate in GATEWAY_TLS_CERT_FILE {cert_path}")
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Loaded {
            config: Arc::new(config),
            fingerprint: self.fingerprint(),
        })
    }
}

fn read_file(variable: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{variable} {} cannot be read", path.display()))
}

/// Every certificate in a PEM file; other blocks are skipped.
fn certificates(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("is not valid PEM: {e}"))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    );
    Ok(certificates)
}

/// Accepts callers whose certificate chains to one of the CAs in `pem`,
/// and no others.
fn client_verifier(
    pem: &[u8],
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(pem)? {
        roots
            .add(certificate)
            .context("holds a certificate that cannot be a trust anchor")?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .context("cannot verify client certificates with these CAs")
}
