//! JWS compact verification with keys parsed once. jsonwebtoken re-parses the public key on
//! every call (for P-256 that doubles the cost of a check); here each key is an aws-lc
//! `ParsedPublicKey`, an HMAC key, or for ES256 a P-256 key with its own multiplication table
//! (`es256`), built when the snapshot loads. The header is parsed
//! strictly: the algorithm is pinned, the `kid` must name a known key, `crit` is refused.

use aws_lc_rs::signature::{self, ParsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::es256;
use super::keys::KeySet;
use super::tokens::{Claims, MAX_TOKEN_BYTES, TokenSettings};
use crate::error::GatewayError;

/// A verification key, ready to use.
pub enum Verifier {
    Public(ParsedPublicKey),
    P256(Box<es256::PublicKey>),
    Hmac(Box<aws_lc_rs::hmac::Key>),
}

impl Verifier {
    /// `public`: Ed25519 raw key, uncompressed P-256 point, or RSA public key DER (RFC 8017).
    pub fn public(alg: Algorithm, public: &[u8]) -> Result<Self, String> {
        let algorithm: &'static dyn signature::VerificationAlgorithm = match alg {
            Algorithm::EdDSA => &signature::ED25519,
            Algorithm::ES256 => return es256::PublicKey::new(public).map(|k| Self::P256(Box::new(k))),
            Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            _ => return Err("not an asymmetric algorithm".into()),
        };
        ParsedPublicKey::new(algorithm, public)
            .map(Self::Public)
            .map_err(|e| format!("unusable public key: {e}"))
    }

    pub fn hmac(secret: &[u8]) -> Self {
        Self::Hmac(Box::new(aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret)))
    }

    fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Public(k) => k.verify_sig(message, sig).is_ok(),
            Self::P256(k) => k.verify(message, sig),
            Self::Hmac(k) => aws_lc_rs::hmac::verify(k, message, sig).is_ok(),
        }
    }
}

#[derive(Deserialize)]
struct JoseHeader<'a> {
    alg: &'a str,
    #[serde(default)]
    kid: Option<&'a str>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// `aud` may be one string or a list (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims as they may arrive; `Claims` is what a valid token carries.
#[derive(Deserialize)]
struct WireClaims {
    iss: String,
    aud: Audience,
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    sid: String,
    #[serde(default)]
    jti: String,
    #[serde(default)]
    iat: u64,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::EdDSA => "EdDSA",
        Algorithm::ES256 => "ES256",
        Algorithm::RS256 => "RS256",
        _ => "HS256",
    }
}

/// Verifies a compact JWS and its claims at time `now`.
pub fn verify(
    token: &str,
    keys: &KeySet,
    settings: &TokenSettings,
    now: u64,
) -> Result<Claims, GatewayError> {
    let invalid = GatewayError::TokenInvalid;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid("token too large"));
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h64), Some(p64), Some(s64), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not three segments"));
    };
    let header_bytes = B64.decode(h64).map_err(|_| invalid("header not base64url"))?;
    let header: JoseHeader = serde_json::from_slice(&header_bytes).map_err(|_| invalid("header not JSON"))?;
    if header.alg != alg_name(keys.algorithm) {
        return Err(invalid("algorithm not allowed"));
    }
    if header.crit.is_some() {
        return Err(invalid("critical header extensions are not supported"));
    }
    let kid = header.kid.ok_or(invalid("no kid"))?;
    let key = keys.find(kid).ok_or(invalid("unknown kid"))?;
    let sig = B64.decode(s64).map_err(|_| invalid("signature not base64url"))?;
    let signed = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    if !key.verify(signed, &sig) {
        return Err(invalid("bad signature"));
    }
    let payload = B64.decode(p64).map_err(|_| invalid("payload not base64url"))?;
    let c: WireClaims =
        serde_json::from_slice(&payload).map_err(|_| invalid("claims missing or mistyped"))?;
    let leeway = settings.leeway_secs;
    if c.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(invalid("not yet valid"));
    }
    if c.iss != settings.issuer {
        return Err(invalid("issuer"));
    }
    let aud_ok = match &c.aud {
        Audience::One(a) => *a == settings.audience,
        Audience::Many(list) => list.contains(&settings.audience),
    };
    if !aud_ok {
        return Err(invalid("audience"));
    }
    if c.sub.is_empty() || c.sid.is_empty() {
        return Err(invalid("empty sub or sid"));
    }
    // Last: `1.1.1.11` tells a client to refresh, so it is the answer only when expiry is the
    // token's one fault (any other makes it `token.invalid`).
    if c.exp.saturating_add(leeway) < now {
        return Err(GatewayError::TokenExpired);
    }
    Ok(Claims {
        iss: c.iss,
        aud: settings.audience.clone(),
        sub: c.sub,
        roles: c.roles,
        sid: c.sid,
        jti: c.jti,
        iat: c.iat,
        exp: c.exp,
    })
}

/// DER `RSAPublicKey` (RFC 8017) from its modulus and exponent, as aws-lc parses it.
pub fn rsa_public_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let v = &v[v.iter().position(|b| *b != 0).unwrap_or(v.len().saturating_sub(1))..];
        let mut body = Vec::with_capacity(v.len() + 1);
        if v.first().is_some_and(|b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(v);
        tlv(0x02, &body)
    }
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = body.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len() - 1);
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(body);
        out
    }
    let mut seq = int(n);
    seq.extend(int(e));
    tlv(0x30, &seq)
}
