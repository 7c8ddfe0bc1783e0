//! The transports against a real rustls client in memory: the handshake, bytes both ways,
//! close_notify, a client that is refused (an alert, then the failure), and load errors that
//! name the file.

use std::io::{Read, Write};
use std::sync::Arc;

use super::*;
use crate::tls::{server_config, CertFiles, TlsFiles};

#[test]
fn plain_passes_bytes_through() {
    let mut t = Transport::Plain;
    let tx = t.on_send(b"abc".to_vec());
    assert_eq!(tx.owned_bytes(), Some(&b"abc"[..]));
    assert!(t.passes_bytes_through() && t.tls_mut().is_none());
}

/// A self-signed certificate for `localhost`, written to temporary files.
struct TestCert {
    dir: std::path::PathBuf,
    cert_der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCert {
    fn new(tag: &str) -> TestCert {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir =
            std::env::temp_dir().join(format!("ringway-transport-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        TestCert {
            dir,
            cert_der: cert.der().clone(),
        }
    }

    fn files(&self) -> TlsFiles {
        TlsFiles {
            default: CertFiles {
                cert: self.dir.join("cert.pem"),
                key: self.dir.join("key.pem"),
            },
            sni: Vec::new(),
        }
    }

    fn client(&self) -> rustls::ClientConnection {
        Self::connect(self.client_config())
    }

    fn connect(config: Arc<rustls::ClientConfig>) -> rustls::ClientConnection {
        rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap()
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Moves the client's pending records to the server transport; returns what the server opened.
fn client_to_server(client: &mut rustls::ClientConnection, server: &mut Tls) -> Opened {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    server.open(&wire)
}

fn server_to_client(client: &mut rustls::ClientConnection, bytes: &[u8]) -> Vec<u8> {
    let mut rd = bytes;
    while !rd.is_empty() {
        client.read_tls(&mut rd).unwrap();
        client.process_new_packets().unwrap();
    }
    let mut plain = Vec::new();
    let _ = client.reader().read_to_end(&mut plain);
    plain
}

fn handshake(client: &mut rustls::ClientConnection, server: &mut Tls) {
    for _ in 0..4 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return;
        }
        let opened = client_to_server(client, server);
        assert!(opened.failed.is_none(), "{:?}", opened.failed);
        if let Some(reply) = opened.reply {
            server_to_client(client, &reply);
        }
    }
    assert!(!server.is_handshaking() && !client.is_handshaking());
}

fn tls(config: &Arc<rustls::ServerConfig>) -> Box<Tls> {
    match Transport::tls(config).unwrap() {
        Transport::Tls(t) => t,
        Transport::Plain => panic!("a TLS transport"),
    }
}

#[test]
fn a_tls_session_carries_bytes_both_ways_and_ends_with_close_notify() {
    let cert = TestCert::new("session");
    let config = server_config(&cert.files()).expect("load the test certificate");
    let mut server = tls(&config);
    let mut client = cert.client();
    handshake(&mut client, &mut server);
    assert_eq!(client.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(server.server_name(), Some("localhost"));
    assert_eq!(server.version(), Some(rustls::ProtocolVersion::TLSv1_3));
    // Client → server: the plaintext comes out whole, however many records it took.
    let request = vec![b'x'; 40_000];
    client.writer().write_all(&request).unwrap();
    let opened = client_to_server(&mut client, &mut server);
    assert_eq!(opened.plain, request);
    // Server → client: sealed bytes open to the same plaintext.
    let sealed = server.seal(b"HTTP/1.1 101 Switching Protocols\r\n\r\n");
    assert_eq!(
        server_to_client(&mut client, &sealed),
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
    );
    // close_notify once, then nothing.
    let alert = server.close_notify().expect("close_notify");
    assert!(server.close_notify().is_none(), "only once");
    let mut rd = &alert[..];
    client.read_tls(&mut rd).unwrap();
    assert!(client.process_new_packets().unwrap().peer_has_closed());
    // The client's close_notify ends the server's stream.
    client.send_close_notify();
    let opened = client_to_server(&mut client, &mut server);
    assert!(opened.closed && opened.failed.is_none());
}

#[test]
fn a_returning_client_resumes() {
    let cert = TestCert::new("resume");
    let config = server_config(&cert.files()).unwrap();
    let client_config = cert.client_config();
    let mut client = TestCert::connect(client_config.clone());
    let mut server = tls(&config);
    handshake(&mut client, &mut server);
    assert!(!server.resumed());
    // The tickets sent after the handshake (TLS 1.3) reach the client with the first bytes.
    let sealed = server.seal(b"hi");
    assert_eq!(server_to_client(&mut client, &sealed), b"hi");
    // A second connection made from the same client config (its session cache) resumes, on a
    // second server session: the ticket key is shared.
    let mut second = TestCert::connect(client_config);
    let mut server2 = tls(&config);
    handshake(&mut second, &mut server2);
    assert!(
        server2.resumed(),
        "the ticket from the first session was used"
    );
}

#[test]
fn garbage_instead_of_a_client_hello_fails_with_an_alert() {
    let cert = TestCert::new("garbage");
    let config = server_config(&cert.files()).unwrap();
    let mut server = tls(&config);
    let opened = server.open(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(opened.failed.is_some(), "plain HTTP on a TLS port fails");
    assert!(opened.plain.is_empty());
    let alert = opened.reply.expect("an alert for the client");
    assert_eq!(alert[0], 0x15, "a TLS alert record: {alert:?}");
}

#[test]
fn missing_unreadable_and_mismatched_files_are_named() {
    let a = TestCert::new("mismatch-a");
    let b = TestCert::new("mismatch-b");
    let mut files = a.files();
    files.default.key = b.dir.join("key.pem");
    let e = server_config(&files).unwrap_err().to_string();
    assert!(
        e.contains("cert.pem") && e.contains("key.pem") && e.contains("does not belong"),
        "{e}"
    );
    let mut files = a.files();
    files.default.cert = a.dir.join("nope.pem");
    let e = server_config(&files).unwrap_err().to_string();
    assert!(
        e.contains("cannot read certificate") && e.contains("nope.pem"),
        "{e}"
    );
    let mut files = a.files();
    files.default.cert = a.dir.join("key.pem");
    let e = server_config(&files).unwrap_err().to_string();
    assert!(e.contains("key.pem") && e.contains("no certificate"), "{e}");
    let mut files = a.files();
    files.sni = vec![(vec!["db.example.com".into()], a.files().default)];
    let e = server_config(&files).unwrap_err().to_string();
    assert!(
        e.contains("db.example.com"),
        "a certificate not valid for its SNI name: {e}"
    );
}

#[test]
fn framing_is_what_records_add_even_when_reads_split_them() {
    let cert = TestCert::new("framing");
    let config = server_config(&cert.files()).expect("load the test certificate");
    let mut server = tls(&config);
    let mut client = cert.client();
    handshake(&mut client, &mut server);
    // 1,000 tiny records: 22 bytes of framing each under TLS 1.3 (header, type, tag).
    let mut wire = Vec::new();
    for i in 0..1000u32 {
        client.writer().write_all(&[i as u8]).unwrap();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
    }
    let opened = server.open(&wire);
    assert_eq!(opened.plain.len(), 1000);
    assert_eq!(opened.framing, 22_000);
    // Bulk: four 16 KiB records read in pieces that split them. A split record counts whole in
    // the read that began it and is credited in the next, so the reads together report the
    // records' framing plus at most one record, not a record's worth per read.
    let bulk = vec![7u8; 4 * 16_384];
    client.writer().write_all(&bulk).unwrap();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let (mut plain, mut framing) = (0, 0);
    for piece in wire.chunks(10_000) {
        let opened = server.open(piece);
        plain += opened.plain.len();
        framing += opened.framing;
    }
    assert_eq!(plain, bulk.len());
    assert!(
        framing <= wire.len() - bulk.len() + 16_384 + 22,
        "framing {framing} for {} bytes of records of {} plaintext",
        wire.len(),
        bulk.len()
    );
}
