//! Access tokens: issuing JWTs, the Bearer check, and the opaque refresh/one-time tokens.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::{HeaderMap, HeaderValue, header};
use jsonwebtoken::Header;
use serde::{Deserialize, Serialize};

use super::cache::{Revocations, TokenCache};
use super::keys::KeySet;
use crate::error::GatewayError;
pub use crate::framing::trim_spaces;
use crate::store::TokenHash;

/// Tokens longer than this are refused before any parsing (SPEC: 8 KiB).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub sid: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
}

/// Who made a request, as proven by a verified token. Built only by the Bearer check (or
/// explicitly as anonymous for a public route); this is what becomes the `X-Auth-*` headers.
#[derive(Debug)]
pub struct Identity {
    pub login: String,
    pub roles: Vec<String>,
    pub session: String,
    pub exp: u64,
    pub login_header: HeaderValue,
    pub roles_header: HeaderValue,
    pub session_header: HeaderValue,
}

impl Identity {
    fn new(claims: Claims) -> Result<Self, GatewayError> {
        let hv = |s: &str| {
            HeaderValue::from_bytes(s.as_bytes())
                .map_err(|_| GatewayError::TokenInvalid("claim not header-safe"))
        };
        Ok(Self {
            login_header: hv(&claims.sub)?,
            roles_header: hv(&claims.roles.join(","))?,
            session_header: hv(&claims.sid)?,
            login: claims.sub,
            roles: claims.roles,
            session: claims.sid,
            exp: claims.exp,
        })
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

#[derive(Debug, Clone)]
pub struct Authenticated(Option<Arc<Identity>>);

impl Authenticated {
    /// For `auth = "public"` routes: the request carries no identity.
    pub fn anonymous() -> Self {
        Self(None)
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.0.as_deref()
    }

    pub fn identity_arc(&self) -> Option<Arc<Identity>> {
        self.0.clone()
    }
}

/// The fixed parts of token issuing and checking, from `[tokens]`.
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
}

impl TokenSettings {
    pub fn new(issuer: String, audience: String, leeway_secs: u64) -> Self {
        Self { issuer, audience, leeway_secs }
    }
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// 256 random bits, base64url: refresh tokens, OTTs. 128 bits for ids (session, jti).
pub fn random_token(bytes: usize) -> String {
    let mut buf = [0u8; 32];
    let n = bytes.min(32);
    // aws-lc's fill only fails if the OS has no randomness at all; nothing can be issued then.
    if aws_lc_rs::rand::fill(&mut buf[..n]).is_err() {
        panic!("operating system randomness unavailable");
    }
    B64.encode(&buf[..n])
}

/// What the store keeps instead of an opaque token.
pub fn token_hash(token: &str) -> TokenHash {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Signs an access token. Returns the JWT and its `exp`.
pub fn issue_access(
    keys: &KeySet,
    settings: &TokenSettings,
    login: &str,
    roles: &[String],
    session: &str,
    lifetime_secs: u64,
    now: u64,
) -> Result<(String, u64), GatewayError> {
    let exp = now + lifetime_secs;
    let claims = Claims {
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        sub: login.to_string(),
        roles: roles.to_vec(),
        sid: session.to_string(),
        jti: random_token(16),
        iat: now,
        exp,
    };
    let mut header = Header::new(keys.algorithm);
    header.kid = Some(keys.signing_kid.clone());
    let jwt = jsonwebtoken::encode(&header, &claims, &keys.signing)
        .map_err(|e| GatewayError::Internal(format!("signing failed: {e}")))?;
    Ok((jwt, exp))
}

/// The token from `Authorization: Bearer <token>`. More than one Authorization header is refused
/// (never "first wins"); a missing header or another scheme is `token.missing`.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let token = bearer_value(headers)?;
    check_token68(token)?;
    Ok(token)
}

/// The characters of an RFC 9110 token68, or `token.invalid`.
pub fn check_token68(token: &str) -> Result<(), GatewayError> {
    if token.bytes().all(|b| TOKEN68[usize::from(b)]) {
        Ok(())
    } else {
        Err(GatewayError::TokenInvalid("characters outside token68"))
    }
}

/// As [`bearer_token`], without the character check: for [`verify`], which makes it only when
/// the token is not in the cache.
pub fn bearer_value(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next().map(HeaderValue::as_bytes);
    bearer_in(first, usize::from(first.is_some()) + values.count())
}

/// As [`bearer_value`], from the (last) Authorization value and how many there were.
pub fn bearer_in(value: Option<&[u8]>, count: usize) -> Result<&str, GatewayError> {
    let Some(bytes) = value else { return Err(GatewayError::TokenMissing) };
    if count > 1 {
        return Err(GatewayError::TokenInvalid("more than one Authorization header"));
    }
    if bytes.len() < 7 || !bytes[..7].eq_ignore_ascii_case(b"bearer ") {
        return Err(GatewayError::TokenMissing);
    }
    let token = trim_spaces(&bytes[7..]);
    if token.is_empty() {
        return Err(GatewayError::TokenMissing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(GatewayError::TokenInvalid("token too large"));
    }
    // Any other byte is refused by the token68 check that follows, as the same error.
    std::str::from_utf8(token).map_err(|_| GatewayError::TokenInvalid("characters outside token68"))
}

/// The bytes of RFC 9110 token68 (one table load per byte: this runs on every request).
static TOKEN68: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'=' | b'+' | b'/' | b'~');
        b += 1;
    }
    t
};

/// The Bearer check: a cache hit costs a keyed hash, one map lookup and a revocation lookup;
/// a miss verifies the signature and claims with the pinned algorithm, then fills the cache.
pub fn verify(
    token: &str,
    keys: &KeySet,
    settings: &TokenSettings,
    cache: &TokenCache,
    revocations: &Revocations,
    now: u64,
) -> Result<Authenticated, GatewayError> {
    let cached = cache.enabled();
    if cached {
        if let Some(identity) = cache.get(token, keys.generation) {
            cache.count(true);
            if identity.exp.saturating_add(settings.leeway_secs) < now {
                cache.remove(token);
                return Err(GatewayError::TokenExpired);
            }
            if revocations.is_revoked(&identity.session, now) {
                return Err(GatewayError::TokenInvalid("session revoked"));
            }
            return Ok(Authenticated(Some(identity)));
        }
    }
    cache.count(false);
    // Only tokens that passed this are ever cached, so a hit needs no second look.
    check_token68(token)?;
    let identity = Arc::new(verify_signature(token, keys, settings)?);
    if revocations.is_revoked(&identity.session, now) {
        return Err(GatewayError::TokenInvalid("session revoked"));
    }
    if cached {
        cache.insert(token, identity.clone(), keys.generation, now);
    }
    Ok(Authenticated(Some(identity)))
}

pub fn verify_signature(
    token: &str,
    keys: &KeySet,
    settings: &TokenSettings,
) -> Result<Identity, GatewayError> {
    Identity::new(super::jwt::verify(token, keys, settings, now_secs())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&headers(&["Bearer abc.def"])).unwrap(), "abc.def");
        assert_eq!(bearer_token(&headers(&["bearer   abc "])).unwrap(), "abc");
        assert!(matches!(bearer_token(&headers(&[])), Err(GatewayError::TokenMissing)));
        assert!(matches!(bearer_token(&headers(&["Basic YTpi"])), Err(GatewayError::TokenMissing)));
        assert!(matches!(bearer_token(&headers(&["Bearer "])), Err(GatewayError::TokenMissing)));
        assert!(matches!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(GatewayError::TokenInvalid(_))
        ));
        assert!(matches!(bearer_token(&headers(&["Bearer a b"])), Err(GatewayError::TokenInvalid(_))));
        let big = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(matches!(bearer_token(&headers(&[&big])), Err(GatewayError::TokenInvalid(_))));
    }

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_token(32));
        assert_eq!(token_hash(&a), token_hash(&a));
    }
}
