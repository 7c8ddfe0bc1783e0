//! `ringway access`: the settings of a local client that turns a local TCP port into tunnels to
//! an edge (`ws://` or `wss://`), built from the command line: the URL parsed and resolved, the
//! TLS client settings (trusted CAs, the name to verify and send as SNI, ALPN `http/1.1`, session
//! resumption), extra request headers. Every error says which option is wrong and why.

use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ringway_proto::access::AccessConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;

use crate::conn::EdgeTls;
use crate::worker::AccessSetup;

/// Where system CA certificates are on Debian and most distributions.
const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A parsed `ws://` or `wss://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeUrl {
    pub tls: bool,
    /// The host as written (no brackets for IPv6).
    pub host: String,
    pub port: u16,
    /// The Host header: the authority as written.
    pub authority: String,
    /// Path and query (`/` if none).
    pub path: String,
}

/// Parses `ws://HOST[:PORT]/PATH` or `wss://...`.
pub fn parse_url(url: &str) -> Result<EdgeUrl, String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else {
        return Err(format!(
            "--url {url:?}: expected ws://HOST[:PORT]/PATH or wss://..."
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("--url {url:?}: unclosed [ in the host"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p
                .parse()
                .map_err(|_| format!("--url {url:?}: bad port {p:?}"))?,
            None if after.is_empty() => default_port,
            None => {
                return Err(format!(
                    "--url {url:?}: unexpected {after:?} after the host"
                ))
            }
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse()
                    .map_err(|_| format!("--url {url:?}: bad port {p:?}"))?,
            ),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("--url {url:?}: no host"));
    }
    Ok(EdgeUrl {
        tls,
        host,
        port,
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

/// Command-line options of `ringway access`, as given.
#[derive(Clone, Debug, Default)]
pub struct AccessOptions {
    pub url: String,
    pub ca: Option<std::path::PathBuf>,
    pub sni: Option<String>,
    pub headers: Vec<String>,
    pub insecure_skip_verify: bool,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub close_timeout: Duration,
    pub max_pending: usize,
    /// Warm tunnels per worker (`--warm K` split over the workers).
    pub warm: usize,
    /// Warm tunnels older than this are replaced.
    pub warm_refresh: Duration,
}

/// Builds what the workers share.
pub fn setup(o: &AccessOptions) -> Result<AccessSetup, String> {
    let url = parse_url(&o.url)?;
    let edge = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("--url: cannot resolve {}: {e}", url.host))?
        .next()
        .ok_or_else(|| format!("--url: {} resolves to no address", url.host))?;
    let mut headers = Vec::new();
    for h in &o.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let tls = if url.tls {
        Some(Arc::new(edge_tls(o, &url)?))
    } else {
        if o.ca.is_some() || o.sni.is_some() || o.insecure_skip_verify {
            return Err("--ca, --sni and --insecure-skip-verify need a wss:// URL".into());
        }
        None
    };
    let config = AccessConfig {
        edge,
        host: url.authority.clone(),
        path: url.path.clone(),
        headers,
        connect_timeout: o.connect_timeout,
        handshake_timeout: o.handshake_timeout,
        close_timeout: o.close_timeout,
        max_payload: 64 << 20,
        max_pending: o.max_pending,
    };
    Ok(AccessSetup {
        config: Arc::new(config),
        tls,
        warm: o.warm,
        warm_refresh: o.warm_refresh,
    })
}

fn edge_tls(o: &AccessOptions, url: &EdgeUrl) -> Result<EdgeTls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?;
    let mut config = if o.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let file = o.ca.as_deref().unwrap_or(Path::new(SYSTEM_CAS));
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(file)
            .and_then(|c| c.collect::<Result<Vec<_>, _>>())
            .map_err(|e| match &o.ca {
                Some(_) => format!("--ca {}: {e}", file.display()),
                None => format!(
                    "no --ca given and the system CA bundle {} cannot be read: {e}",
                    file.display()
                ),
            })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "--ca {}: no usable certificate in it",
                file.display()
            ));
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name_text = o.sni.clone().unwrap_or_else(|| url.host.clone());
    let name = ServerName::try_from(name_text.clone())
        .map_err(|_| format!("--sni {name_text:?}: not a DNS name or IP address"))?;
    Ok(EdgeTls {
        config: Arc::new(config),
        name,
    })
}

/// `--insecure-skip-verify` (tests only): any certificate and name is accepted; handshake
/// signatures are still checked, so the session is at least with whoever holds the key.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports_and_paths() {
        let u = parse_url("wss://edge.example/db?x=1").unwrap();
        assert_eq!(
            (
                u.tls,
                u.host.as_str(),
                u.port,
                u.authority.as_str(),
                u.path.as_str()
            ),
            (true, "edge.example", 443, "edge.example", "/db?x=1")
        );
        let u = parse_url("ws://127.0.0.1:8080").unwrap();
        assert_eq!((u.tls, u.port, u.path.as_str()), (false, 8080, "/"));
        let u = parse_url("wss://[::1]:9443/db").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("::1", 9443, "[::1]:9443")
        );
        for bad in ["http://x/", "wss://:443/", "wss://h:port/", "wss://[::1/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_errors_name_the_option() {
        let o = AccessOptions {
            url: "ws://127.0.0.1:1/db".into(),
            headers: vec!["no colon".into()],
            ..AccessOptions::default()
        };
        assert!(setup(&o).unwrap_err().contains("--header"));
        let o = AccessOptions {
            url: "ws://127.0.0.1:1/db".into(),
            sni: Some("x".into()),
            ..AccessOptions::default()
        };
        assert!(setup(&o).unwrap_err().contains("wss://"));
        let o = AccessOptions {
            url: "wss://127.0.0.1:1/db".into(),
            ca: Some("/nonexistent/ca.pem".into()),
            ..AccessOptions::default()
        };
        assert!(setup(&o).unwrap_err().contains("--ca /nonexistent/ca.pem"));
    }
}
