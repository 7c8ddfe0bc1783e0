//! Certificates for the TLS tests, made fresh for each test with rcgen: a test CA and leaf
//! certificates it signs, written as PEM files into a temporary directory that is removed on
//! drop.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::server::temp_path;

/// A CA and the directory its files go to.
pub struct TestPki {
    pub dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A leaf certificate's files.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Leaf {
    /// The listener's `tls` inline-table body for this certificate.
    pub fn toml(&self) -> String {
        format!(
            "cert = \"{}\", key = \"{}\"",
            self.cert.display(),
            self.key.display()
        )
    }
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = temp_path("pki");
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two test CAs are two issuers, not one with a bad signature.
        let name = format!(
            "ringway test CA {}",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("")
        );
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = params.self_signed(&ca_key).expect("self-sign the CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
        TestPki { dir, ca, ca_key }
    }

    /// The CA certificate file clients trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A leaf for `names`, with common name `cn`, written as `<file>.pem` / `<file>.key`.
    pub fn leaf(&self, file: &str, cn: &str, names: &[&str]) -> Leaf {
        self.leaf_with(file, cn, names, false)
    }

    /// The same, expired since 2020 when `expired`.
    pub fn leaf_with(&self, file: &str, cn: &str, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2019, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign the leaf");
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write the key");
        leaf
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
