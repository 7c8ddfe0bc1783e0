//! TLS client settings (rustls 0.23, ring): which server certificates to trust, and one
//! `ClientConfig` per load thread.
//!
//! [`TlsClient`] is built once per run from `--ca` / `--insecure` / `--no-resume`. Each load
//! thread takes its own config from [`TlsClient::thread_config`]: with resumption on, the config
//! has its own in-memory session cache, so every setup of a thread can resume a session (TLS 1.3
//! ticket or TLS 1.2 session) an earlier setup of the same thread received, and threads never
//! share a cache lock; with resumption off, no session is stored or offered and every handshake
//! is a full one. Both sides speak TLS 1.2 and 1.3 only; wss offers ALPN `http/1.1` (the upgrade
//! is an HTTP/1.1 request), tls offers no ALPN. `--insecure` skips the certificate check (chain
//! and name) but still checks the handshake signatures, so the key exchange is the one a real
//! client pays for.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::target::Target;

/// Sessions each thread's cache remembers (rustls keeps up to 8 TLS 1.3 tickets per server).
const SESSION_CACHE: usize = 256;

/// How the client trusts the server, and whether it resumes sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    /// A PEM file of certificates to trust (a CA, or the server's own certificate).
    pub ca: Option<PathBuf>,
    /// Accept any certificate (the handshake signatures are still checked).
    pub insecure: bool,
    /// Keep sessions and offer them on the next setup of the same thread.
    pub resume: bool,
}

impl TlsOptions {
    /// Trust the certificates in `ca`, resume sessions.
    pub fn trusting(ca: impl Into<PathBuf>) -> TlsOptions {
        TlsOptions {
            ca: Some(ca.into()),
            insecure: false,
            resume: true,
        }
    }
}

/// Everything a thread needs to open TLS sessions to one target.
#[derive(Clone)]
pub struct TlsClient {
    /// Trust, versions and ALPN; each thread clones it and sets its own resumption.
    base: ClientConfig,
    server_name: ServerName<'static>,
    resume: bool,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("server_name", &self.server_name)
            .field("resume", &self.resume)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Settings for `target` (a tls:// or wss:// target). Fails, in words naming the file, when
    /// the CA file cannot be read or holds no certificate, or when neither a CA nor `insecure`
    /// is given.
    pub fn new(target: &Target, opts: &TlsOptions) -> Result<TlsClient, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?;
        let mut base = match (&opts.ca, opts.insecure) {
            (_, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            (Some(ca), false) => builder
                .with_root_certificates(roots(ca)?)
                .with_no_client_auth(),
            (None, false) => {
                return Err(format!(
                    "{target}: a TLS target needs --ca FILE (the CA or certificate to trust) \
                     or --insecure"
                ))
            }
        };
        if target.is_ws() {
            base.alpn_protocols = vec![b"http/1.1".to_vec()];
        }
        let server_name = ServerName::try_from(target.host().to_owned()).map_err(|e| {
            format!(
                "{target}: {:?} is not a TLS server name: {e}",
                target.host()
            )
        })?;
        Ok(TlsClient {
            base,
            server_name,
            resume: opts.resume,
        })
    }

    /// Whether sessions are resumed.
    pub fn resume(&self) -> bool {
        self.resume
    }

    /// The name the certificate is checked against (and sent as SNI when it is a DNS name).
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// A config for one thread: its own session cache, or none with resumption off.
    pub fn thread_config(&self) -> Arc<ClientConfig> {
        let mut config = self.base.clone();
        config.resumption = if self.resume {
            Resumption::in_memory_sessions(SESSION_CACHE)
        } else {
            Resumption::disabled()
        };
        Arc::new(config)
    }
}

fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| format!("--ca {}: cannot read: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("--ca {}: not PEM: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("--ca {}: not a usable certificate: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("--ca {}: no certificate in the file", ca.display()));
    }
    Ok(roots)
}

/// `--insecure`: any certificate chain and name is accepted; signatures are still verified.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_target_needs_a_ca_or_insecure() {
        let t = Target::parse("wss://127.0.0.1:1/x").unwrap();
        let none = TlsOptions {
            ca: None,
            insecure: false,
            resume: true,
        };
        let e = TlsClient::new(&t, &none).unwrap_err();
        assert!(e.contains("--ca FILE"), "{e}");
        let insecure = TlsOptions {
            insecure: true,
            ..none
        };
        let c = TlsClient::new(&t, &insecure).unwrap();
        assert_eq!(c.thread_config().alpn_protocols, vec![b"http/1.1".to_vec()]);
        let e = TlsClient::new(&t, &TlsOptions::trusting("/nonexistent/ca.pem")).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem: cannot read"), "{e}");
    }

    #[test]
    fn tls_offers_no_alpn() {
        let t = Target::parse("tls://127.0.0.1:1").unwrap();
        let opts = TlsOptions {
            ca: None,
            insecure: true,
            resume: false,
        };
        let c = TlsClient::new(&t, &opts).unwrap();
        assert!(c.thread_config().alpn_protocols.is_empty());
        assert!(!c.resume());
        assert_eq!(c.server_name().to_str(), "127.0.0.1");
    }
}
