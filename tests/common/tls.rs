//! Certificates made in a test (rcgen), the flags that serve them, and `kv` over TLS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA and a certificate it signs for 127.0.0.1 and localhost, as PEM files in `dir`.
pub fn certs(dir: &Path) -> Result<Certs, Box<dyn std::error::Error>> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // distinct names: OpenSSL takes a leaf whose subject equals its issuer for self-signed
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kvstore test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let key = rcgen::KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    let c = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("node.pem"),
        key: dir.join("node.key"),
    };
    std::fs::write(&c.ca, ca.pem())?;
    std::fs::write(&c.cert, cert.pem())?;
    std::fs::write(&c.key, key.serialize_pem())?;
    Ok(c)
}

pub fn tls_args(c: &Certs) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        c.cert.display().to_string(),
        "--tls-key".into(),
        c.key.display().to_string(),
        "--tls-ca".into(),
        c.ca.display().to_string(),
    ]
}

pub fn kv_tls(port: u16, ca: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(["--port", &port.to_string(), "--timeout-ms", "20000"])
        .arg("--tls-ca")
        .arg(ca)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kv")
}
