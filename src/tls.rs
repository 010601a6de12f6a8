//! The rustls server configuration: TLS 1.2 and 1.3 only, ALPN h2 and http/1.1, optional mTLS,
//! the server's cipher-suite order; and the acceptor that picks the configuration per
//! ClientHello.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::auth::keys::{Generation, write_private};
use crate::config::{ConfigError, TlsConfig};

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub fn server_config(cfg: &TlsConfig, file: &Path) -> Result<Arc<ServerConfig>, ConfigError> {
    server_config_with(cfg, file, &mut Generation::default())
}

/// As [`server_config`]; a missing development certificate is written, or in a dry run only
/// noted in `generation` and made up in memory so the rest can still be checked.
pub fn server_config_with(
    cfg: &TlsConfig,
    file: &Path,
    generation: &mut Generation,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let err = |key: &str, reason: String| ConfigError::new(file, key, reason);
    let (chain, key) = if cfg.generate_self_signed && (!cfg.cert.exists() || !cfg.key.exists()) {
        let (cert_pem, key_pem) =
            generate_self_signed(cfg, generation).map_err(|e| err("tls.generate_self_signed", e))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes());
        (chain.map_err(|e| err("tls.cert", e.to_string()))?, key.map_err(|e| err("tls.key", e.to_string()))?)
    } else {
        let chain = CertificateDer::pem_file_iter(&cfg.cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| err("tls.cert", format!("{}: {e}", cfg.cert.display())))?;
        let key = PrivateKeyDer::from_pem_file(&cfg.key)
            .map_err(|e| err("tls.key", format!("{}: {e}", cfg.key.display())))?;
        (chain, key)
    };
    if chain.is_empty() {
        return Err(err("tls.cert", format!("{}: no certificate found", cfg.cert.display())));
    }
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
    // Our cipher-suite order (the provider's: AEADs with forward secrecy, strongest first), not
    // the client's, which may put a weaker suite first.
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// As `tokio_rustls::TlsAcceptor`, except for one case: a client whose ALPN offer has no
/// protocol in common with ours (say only `http/1.0`) is served HTTP/1.1 without ALPN, where
/// rustls would end the handshake with a fatal `no_application_protocol` alert. So it reads the
/// ClientHello first and picks the configuration for it.
#[derive(Clone)]
pub struct TlsAcceptor(Arc<ServerConfig>);

impl From<Arc<ServerConfig>> for TlsAcceptor {
    fn from(config: Arc<ServerConfig>) -> Self {
        Self(config)
    }
}

impl TlsAcceptor {
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let config = config_for(&self.0, start.client_hello().alpn());
        start.into_stream(config).await
    }
}

/// `config`, or, when the client offers ALPN protocols and none of ours, a copy without ALPN
/// (built only then: such clients are rare).
fn config_for<'a>(
    config: &Arc<ServerConfig>,
    offered: Option<impl Iterator<Item = &'a [u8]>>,
) -> Arc<ServerConfig> {
    let ours = |p: &[u8]| config.alpn_protocols.iter().any(|o| o.as_slice() == p);
    let common = match offered {
        None => true,
        Some(mut offer) => offer.any(ours),
    };
    if common {
        return config.clone();
    }
    let mut plain = ServerConfig::clone(config);
    plain.alpn_protocols.clear();
    Arc::new(plain)
}

/// A self-signed development certificate for localhost, as (certificate, key) PEM; written to
/// `tls.cert` and `tls.key` unless this is a dry run.
fn generate_self_signed(cfg: &TlsConfig, generation: &mut Generation) -> Result<(String, String), String> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("certificate generation failed: {e}"))?;
    let (cert_pem, key_pem) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    if generation.dry_run {
        let what = format!(
            "a self-signed development certificate at {} (key {})",
            cfg.cert.display(),
            cfg.key.display()
        );
        generation.planned.push(what);
        return Ok((cert_pem, key_pem));
    }
    // Key first: a cert without its key is useless, a key without its cert is regenerated.
    let _ = std::fs::remove_file(&cfg.key);
    let _ = std::fs::remove_file(&cfg.cert);
    write_private(&cfg.key, key_pem.as_bytes())?;
    if let Some(dir) = cfg.cert.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(&cfg.cert, &cert_pem).map_err(|e| format!("cannot write {}: {e}", cfg.cert.display()))?;
    tracing::warn!(cert = %cfg.cert.display(), "generated a self-signed development certificate");
    Ok((cert_pem, key_pem))
}
