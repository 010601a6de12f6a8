//! The rustls server configuration: TLS 1.2 and 1.3 only, ALPN h2 and http/1.1, optional mTLS.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::keys::write_private;
use crate::config::{ConfigError, TlsConfig};

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn server_config(cfg: &TlsConfig, file: &Path) -> Result<Arc<ServerConfig>, ConfigError> {
    let err = |key: &str, reason: String| ConfigError::new(file, key, reason);
    if cfg.generate_self_signed && (!cfg.cert.exists() || !cfg.key.exists()) {
        generate_self_signed(cfg).map_err(|e| err("tls.generate_self_signed", e))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err("tls.cert", format!("{}: {e}", cfg.cert.display())))?;
    if chain.is_empty() {
        return Err(err("tls.cert", format!("{}: no certificate found", cfg.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| err("tls.key", format!("{}: {e}", cfg.key.display())))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| err("tls", e.to_string()))?;
    let builder = if cfg.client_ca.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        let cas = CertificateDer::pem_file_iter(&cfg.client_ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| err("tls.client_ca", format!("{}: {e}", cfg.client_ca.display())))?;
        for ca in cas {
            roots.add(ca).map_err(|e| err("tls.client_ca", e.to_string()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| err("tls.client_ca", e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| err("tls.key", format!("does not match the certificate or is unusable: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn generate_self_signed(cfg: &TlsConfig) -> Result<(), String> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("certificate generation failed: {e}"))?;
    // Key first: a cert without its key is useless, a key without its cert is regenerated.
    let _ = std::fs::remove_file(&cfg.key);
    let _ = std::fs::remove_file(&cfg.cert);
    write_private(&cfg.key, ck.signing_key.serialize_pem().as_bytes())?;
    if let Some(dir) = cfg.cert.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(&cfg.cert, ck.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cfg.cert.display()))?;
    tracing::warn!(cert = %cfg.cert.display(), "generated a self-signed development certificate");
    Ok(())
}
