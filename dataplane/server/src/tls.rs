//! TLS settings of a listener, loaded into a rustls `ServerConfig`: TLS 1.2 and 1.3 only, ALPN
//! `http/1.1`, session resumption (stateless tickets shared by every worker, so a client that
//! comes back on another worker resumes too, and a session-ID cache for TLS 1.2 clients without
//! tickets), and certificates chosen by SNI with a default for every other name.
//!
//! Every error names the file and says what is wrong with it, so `ringway check` and `ringway
//! run` report a missing, unreadable or mismatched certificate or key before serving anything.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ResolvesServerCertUsingSni};
use rustls::sign::CertifiedKey;

/// ALPN protocol offered: the upgrade is an HTTP/1.1 request.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// TLS 1.2 sessions remembered for clients that resume by session ID (per process).
const SESSION_CACHE: usize = 4096;

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A listener's TLS settings: the certificate for any server name, and more chosen by SNI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub default: CertFiles,
    /// Certificates for these names (exact DNS names; each must be valid for its certificate).
    pub sni: Vec<(Vec<String>, CertFiles)>,
}

/// What is wrong with a listener's TLS files, in words, naming the file.
#[derive(Debug)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// Loads the files and builds the listener's server config.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let default = Arc::new(certified_key(&files.default, &provider)?);
    let mut by_name = ResolvesServerCertUsingSni::new();
    for (names, cert) in &files.sni {
        let key = certified_key(cert, &provider)?;
        for name in names {
            by_name.add(name, key.clone()).map_err(|e| {
                TlsError(format!(
                    "{}: not usable for the name {name:?}: {e}",
                    cert.cert.display()
                ))
            })?;
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { default, by_name }));
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| TlsError(format!("session tickets: {e}")))?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok(Arc::new(config))
}

fn certified_key(
    files: &CertFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(_) => {
                "the key does not belong to the certificate".to_string()
            }
            other => other.to_string(),
        };
        TlsError(format!(
            "{} and {}: {why}",
            files.cert.display(),
            files.key.display()
        ))
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    readable(path, "certificate")?;
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            TlsError(format!(
                "{}: not a PEM certificate chain: {e}",
                path.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(TlsError(format!(
            "{}: no certificate in it (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    readable(path, "private key")?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        TlsError(format!(
            "{}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {e}",
            path.display()
        ))
    })
}

/// A clear error for a file that is missing or unreadable, before PEM parsing blurs it.
fn readable(path: &Path, what: &str) -> Result<(), TlsError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| TlsError(format!("cannot read {what} {}: {e}", path.display())))
}

/// Picks the certificate for the client's SNI name, or the default one.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: ResolvesServerCertUsingSni,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello.server_name().is_some() {
            if let Some(key) = self.by_name.resolve(hello) {
                return Some(key);
            }
        }
        Some(self.default.clone())
    }
}

/// The server configs of every listener (`None`: plain), shared by the main thread, which swaps
/// in new ones on SIGHUP, and the workers, which take them on their next tick (one atomic load
/// per tick; the lock only when the generation moved). Open connections keep the config they
/// started with.
#[derive(Debug, Default)]
pub struct SharedTls {
    generation: std::sync::atomic::AtomicU64,
    configs: std::sync::Mutex<Vec<Option<Arc<rustls::ServerConfig>>>>,
}

impl SharedTls {
    pub fn new(configs: Vec<Option<Arc<rustls::ServerConfig>>>) -> SharedTls {
        SharedTls {
            generation: std::sync::atomic::AtomicU64::new(0),
            configs: std::sync::Mutex::new(configs),
        }
    }

    /// Replaces the configs (a reload).
    pub fn replace(&self, configs: Vec<Option<Arc<rustls::ServerConfig>>>) {
        *self.configs.lock().unwrap_or_else(|p| p.into_inner()) = configs;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The configs, if they changed since `seen` (which is updated).
    pub fn changed_since(&self, seen: &mut u64) -> Option<Vec<Option<Arc<rustls::ServerConfig>>>> {
        let now = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if now == *seen {
            return None;
        }
        *seen = now;
        Some(
            self.configs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    pub fn current(&self) -> Vec<Option<Arc<rustls::ServerConfig>>> {
        self.configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
