//! Token keys: loading (and, in development, generating) the signing key, the keys still
//! accepted for verification, their `kid`s and the JWKS document.

use std::path::Path;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey};

use super::jwt::{Verifier, rsa_public_der};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};

use crate::config::{ConfigError, TokensConfig};

/// The algorithms a deployment may pin.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "EdDSA" => Some(Algorithm::EdDSA),
        "ES256" => Some(Algorithm::ES256),
        "RS256" => Some(Algorithm::RS256),
        "HS256" => Some(Algorithm::HS256),
        _ => None,
    }
}

/// One key accepted for verification.
pub struct VerifyKey {
    pub kid: String,
    pub key: Verifier,
    /// The public JWK (without kid/alg/use); `None` for HS256 secrets, which are never published.
    jwk: Option<serde_json::Value>,
}

/// The signing key, every verification key by `kid`, and the JWKS body served to upstreams.
pub struct KeySet {
    pub algorithm: Algorithm,
    pub signing: EncodingKey,
    pub signing_kid: String,
    pub verify: Vec<VerifyKey>,
    pub jwks: bytes::Bytes,
    /// Unique to this load: verified-token cache entries carry the generation of the key set
    /// that verified them, and count only for that key set (a reload may have removed the key).
    pub generation: u64,
}

/// The source of [`KeySet::generation`]: every load gets a number no other key set has.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl KeySet {
    pub fn find(&self, kid: &str) -> Option<&Verifier> {
        self.verify.iter().find(|k| k.kid == kid).map(|k| &k.key)
    }

    /// Loads the keys named in `[tokens]`. With `generate_signing_key = true` (development), a
    /// missing signing key or secret file is created first.
    pub fn load(cfg: &TokensConfig, file: &Path) -> Result<Self, ConfigError> {
        Self::load_with(cfg, file, &mut Generation::default())
    }

    /// As [`KeySet::load`]; a missing development key is written, or in a dry run only noted in
    /// `generation` and made up in memory so the rest can still be checked.
    pub fn load_with(
        cfg: &TokensConfig,
        file: &Path,
        generation: &mut Generation,
    ) -> Result<Self, ConfigError> {
        let err = |key: &str, reason: String| ConfigError::new(file, key, reason);
        let algorithm = parse_algorithm(&cfg.algorithm).ok_or_else(|| {
            err("tokens.algorithm", format!("`{}` is not one of EdDSA, ES256, RS256, HS256", cfg.algorithm))
        })?;
        let (signing, current) = if algorithm == Algorithm::HS256 {
            let secret = load_secret(cfg, file, generation)?;
            (EncodingKey::from_secret(&secret), hmac_key(&secret))
        } else {
            let path = &cfg.signing_key;
            if path.as_os_str().is_empty() {
                return Err(err("tokens.signing_key", "required for this algorithm".into()));
            }
            let pem = if cfg.generate_signing_key && !path.exists() {
                let pem = generate_private_key(algorithm).map_err(|e| err("tokens.signing_key", e))?;
                generation
                    .create(path, pem.as_bytes(), "a development token signing key")
                    .map_err(|e| err("tokens.signing_key", e))?;
                pem.into_bytes()
            } else {
                std::fs::read(path)
                    .map_err(|e| err("tokens.signing_key", format!("cannot read {}: {e}", path.display())))?
            };
            let (enc, vk) = private_key(algorithm, &pem)
                .map_err(|e| err("tokens.signing_key", format!("{}: {e}", path.display())))?;
            (enc, vk)
        };
        let signing_kid = current.kid.clone();
        let mut verify = vec![current];
        for (i, path) in cfg.previous_keys.iter().enumerate() {
            let key = format!("tokens.previous_keys[{i}]");
            let data =
                std::fs::read(path).map_err(|e| err(&key, format!("cannot read {}: {e}", path.display())))?;
            let vk = if algorithm == Algorithm::HS256 {
                let secret = trim_secret(&data);
                check_secret_len(secret).map_err(|e| err(&key, e))?;
                hmac_key(secret)
            } else {
                previous_key(algorithm, &data).map_err(|e| err(&key, format!("{}: {e}", path.display())))?
            };
            if !verify.iter().any(|k| k.kid == vk.kid) {
                verify.push(vk);
            }
        }
        let alg_name = cfg.algorithm.as_str();
        let keys: Vec<serde_json::Value> = verify
            .iter()
            .filter_map(|k| {
                let mut jwk = k.jwk.clone()?;
                let obj = jwk.as_object_mut()?;
                obj.insert("kid".into(), k.kid.clone().into());
                obj.insert("alg".into(), alg_name.into());
                obj.insert("use".into(), "sig".into());
                Some(jwk)
            })
            .collect();
        let jwks = serde_json::json!({ "keys": keys }).to_string().into();
        let generation = GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self { algorithm, signing, signing_kid, verify, jwks, generation })
    }
}

fn trim_secret(data: &[u8]) -> &[u8] {
    let end = data.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    &data[..end]
}

fn check_secret_len(secret: &[u8]) -> Result<(), String> {
    if secret.len() < 32 {
        return Err(format!("an HS256 secret must be at least 32 bytes (got {})", secret.len()));
    }
    Ok(())
}

fn load_secret(cfg: &TokensConfig, file: &Path, generation: &mut Generation) -> Result<Vec<u8>, ConfigError> {
    let err = |key: &str, reason: String| ConfigError::new(file, key, reason);
    let has_file = !cfg.secret_file.as_os_str().is_empty();
    let has_env = !cfg.secret_env.is_empty();
    let secret = match (has_file, has_env) {
        (true, true) => {
            return Err(err("tokens.secret_env", "set secret_file or secret_env, not both".into()));
        }
        (false, false) => {
            return Err(err("tokens.secret_file", "HS256 needs secret_file or secret_env".into()));
        }
        (false, true) => std::env::var(&cfg.secret_env)
            .map_err(|_| {
                err("tokens.secret_env", format!("environment variable {} is not set", cfg.secret_env))
            })?
            .into_bytes(),
        (true, false) => {
            let path = &cfg.secret_file;
            if cfg.generate_signing_key && !path.exists() {
                let mut raw = [0u8; 48];
                aws_lc_rs::rand::fill(&mut raw)
                    .map_err(|_| err("tokens.secret_file", "no randomness".into()))?;
                let text = format!("{}\n", B64.encode(raw)).into_bytes();
                generation
                    .create(path, &text, "a development HS256 secret")
                    .map_err(|e| err("tokens.secret_file", e))?;
                text
            } else {
                std::fs::read(path)
                    .map_err(|e| err("tokens.secret_file", format!("cannot read {}: {e}", path.display())))?
            }
        }
    };
    let secret = trim_secret(&secret).to_vec();
    let key = if has_env { "tokens.secret_env" } else { "tokens.secret_file" };
    check_secret_len(&secret).map_err(|e| err(key, e))?;
    Ok(secret)
}

fn hmac_key(secret: &[u8]) -> VerifyKey {
    // The kid must not reveal the secret: a truncated SHA-256 of it is safe to publish in headers.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
    VerifyKey { kid: B64.encode(&digest.as_ref()[..12]), key: Verifier::hmac(secret), jwk: None }
}

/// Writes a private file readable by its owner only, creating parent folders.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut f, data).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// What loading does with a development file (`generate_*`) that is missing: writes it
/// (serving), or, in a dry run (`check-config`, which writes nothing), only lists it here.
#[derive(Debug, Default)]
pub struct Generation {
    pub dry_run: bool,
    /// What serving would generate (dry run only), one sentence each.
    pub planned: Vec<String>,
}

impl Generation {
    pub fn dry_run() -> Self {
        Self { dry_run: true, planned: Vec::new() }
    }

    /// Writes a private file `what` at `path`, or notes that serving would.
    pub fn create(&mut self, path: &Path, data: &[u8], what: &str) -> Result<(), String> {
        if self.dry_run {
            self.planned.push(format!("{what} at {}", path.display()));
            return Ok(());
        }
        write_private(path, data)?;
        tracing::warn!(path = %path.display(), "generated {what}");
        Ok(())
    }
}

/// A new private key for `alg`, as PEM.
fn generate_private_key(alg: Algorithm) -> Result<String, String> {
    let kp = match alg {
        Algorithm::EdDSA => rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519),
        Algorithm::ES256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        Algorithm::RS256 => {
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        _ => return Err("cannot generate a key for this algorithm".into()),
    }
    .map_err(|e| format!("key generation failed: {e}"))?;
    Ok(kp.serialize_pem())
}

/// Public JWK members of each key type, in RFC 7638 order, and the key's thumbprint as `kid`.
fn verify_key_from_public(alg: Algorithm, public: PublicParts) -> Result<VerifyKey, String> {
    let (jwk, key) = match (alg, public) {
        (Algorithm::EdDSA, PublicParts::Ed(x)) => {
            let key = Verifier::public(alg, &x)?;
            let x = B64.encode(x);
            (serde_json::json!({ "crv": "Ed25519", "kty": "OKP", "x": x }), key)
        }
        (Algorithm::ES256, PublicParts::Ec(point)) => {
            if point.len() != 65 || point[0] != 4 {
                return Err("not an uncompressed P-256 point".into());
            }
            let (x, y) = (B64.encode(&point[1..33]), B64.encode(&point[33..]));
            let key = Verifier::public(alg, &point)?;
            (serde_json::json!({ "crv": "P-256", "kty": "EC", "x": x, "y": y }), key)
        }
        (Algorithm::RS256, PublicParts::Rsa { n, e }) => {
            if n.len() < 256 {
                return Err("RSA keys must be at least 2048 bits".into());
            }
            let key = Verifier::public(alg, &rsa_public_der(&n, &e))?;
            (serde_json::json!({ "e": B64.encode(&e), "kty": "RSA", "n": B64.encode(&n) }), key)
        }
        _ => return Err("the key does not match tokens.algorithm".into()),
    };
    // serde_json's map is ordered by key, which is exactly RFC 7638's canonical form.
    let thumb = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jwk.to_string().as_bytes());
    Ok(VerifyKey { kid: B64.encode(thumb.as_ref()), key, jwk: Some(jwk) })
}

enum PublicParts {
    Ed(Vec<u8>),
    Ec(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

fn private_key(alg: Algorithm, pem: &[u8]) -> Result<(EncodingKey, VerifyKey), String> {
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| format!("not a PEM private key: {e}"))?;
    let bytes = der.secret_der();
    let (enc, public) = match (alg, &der) {
        (Algorithm::EdDSA, PrivateKeyDer::Pkcs8(_)) => {
            let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes)
                .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
            (EncodingKey::from_ed_der(bytes), PublicParts::Ed(kp.public_key().as_ref().to_vec()))
        }
        (Algorithm::ES256, PrivateKeyDer::Pkcs8(_)) => {
            let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes)
                .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
            (EncodingKey::from_ec_der(bytes), PublicParts::Ec(kp.public_key().as_ref().to_vec()))
        }
        (Algorithm::ES256, PrivateKeyDer::Sec1(_)) => {
            let kp = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, bytes)
                .map_err(|e| format!("not a P-256 key: {e}"))?;
            let pkcs8 = kp.to_pkcs8v1().map_err(|_| "cannot re-encode the P-256 key".to_string())?;
            (EncodingKey::from_ec_der(pkcs8.as_ref()), PublicParts::Ec(kp.public_key().as_ref().to_vec()))
        }
        (Algorithm::RS256, PrivateKeyDer::Pkcs8(_) | PrivateKeyDer::Pkcs1(_)) => {
            let kp = match &der {
                PrivateKeyDer::Pkcs8(_) => RsaKeyPair::from_pkcs8(bytes),
                _ => RsaKeyPair::from_der(bytes),
            }
            .map_err(|e| format!("not an RSA key: {e}"))?;
            let public = kp.public_key();
            let n = public.modulus().big_endian_without_leading_zero().to_vec();
            let e = public.exponent().big_endian_without_leading_zero().to_vec();
            // jsonwebtoken extracts the RFC 8017 RSAPrivateKey from either PEM form.
            let enc = EncodingKey::from_rsa_pem(pem).map_err(|e| format!("not an RSA key: {e}"))?;
            (enc, PublicParts::Rsa { n, e })
        }
        _ => return Err("the key type does not match tokens.algorithm".into()),
    };
    Ok((enc, verify_key_from_public(alg, public)?))
}

fn previous_key(alg: Algorithm, pem: &[u8]) -> Result<VerifyKey, String> {
    if PrivateKeyDer::from_pem_slice(pem).is_ok() {
        return private_key(alg, pem).map(|(_, vk)| vk);
    }
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem)
        .map_err(|e| format!("neither a PEM private key nor a PEM public key: {e}"))?;
    let der: &[u8] = spki.as_ref();
    let public = match alg {
        // Both SPKI forms have a fixed-size header followed by the raw key.
        Algorithm::EdDSA if der.len() == 44 => PublicParts::Ed(der[12..].to_vec()),
        Algorithm::ES256 if der.len() == 91 => PublicParts::Ec(der[26..].to_vec()),
        Algorithm::RS256 => {
            let pk = aws_lc_rs::rsa::PublicKey::from_der(der)
                .map_err(|e| format!("not an RSA public key: {e}"))?;
            PublicParts::Rsa {
                n: pk.modulus().big_endian_without_leading_zero().to_vec(),
                e: pk.exponent().big_endian_without_leading_zero().to_vec(),
            }
        }
        _ => return Err("the public key does not match tokens.algorithm".into()),
    };
    verify_key_from_public(alg, public)
}
