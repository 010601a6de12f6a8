//! Refresh tokens: `{session}.{generation}.{base64url(proof ‖ secret)}`. Why this shape, and
//! what the store keeps of it, is explained in `crate::store::session`.
//!
//! The reuse grace hands a client back the successor of the token it presented, yet the store
//! must not hold that successor readable: each rotation seals the successor's secret with
//! AES-256-GCM under a key derived (HKDF-SHA256) from the presented token's proof and secret.
//! Only a holder of the predecessor can open it, and then only the one successor it produced.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::store::{Presented, Successor, TokenHash};

const PROOF_LEN: usize = 16;
const SECRET_LEN: usize = 32;
/// Session ids are 22 characters; room for ids from a later format, never for megabytes.
const MAX_SESSION_ID: usize = 64;
const SEAL_SALT: &[u8] = b"bo-gateway refresh successor v1";

#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub session: String,
    pub generation: u64,
    proof: [u8; PROOF_LEN],
    secret: [u8; SECRET_LEN],
}

// Never print the secret parts (logs, panics).
impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshToken")
            .field("session", &self.session)
            .field("generation", &self.generation)
            .finish()
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // aws-lc's fill only fails if the OS has no randomness at all; nothing can be issued then.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        panic!("operating system randomness unavailable");
    }
    b
}

fn sha256(b: &[u8]) -> TokenHash {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl RefreshToken {
    /// Generation 0 of a new session.
    pub fn first(session: &str) -> Self {
        Self { session: session.to_string(), generation: 0, proof: random(), secret: random() }
    }

    /// The next generation: same session and proof, a fresh secret.
    pub fn successor(&self) -> Self {
        Self { generation: self.generation.saturating_add(1), secret: random(), ..self.clone() }
    }

    /// `None` for anything not of this form (tokens issued before bounded sessions included).
    pub fn parse(s: &str) -> Option<Self> {
        let (session, rest) = s.split_once('.')?;
        let (generation, payload) = rest.split_once('.')?;
        let id_ok = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        if session.is_empty() || session.len() > MAX_SESSION_ID || !session.bytes().all(id_ok) {
            return None;
        }
        if generation.is_empty() || generation.len() > 20 || !generation.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let generation = generation.parse().ok()?;
        let bytes = B64.decode(payload).ok()?;
        if bytes.len() != PROOF_LEN + SECRET_LEN {
            return None;
        }
        let (p, sec) = bytes.split_at(PROOF_LEN);
        Some(Self {
            session: session.to_string(),
            generation,
            proof: p.try_into().ok()?,
            secret: sec.try_into().ok()?,
        })
    }

    /// The opaque string handed to the client.
    pub fn encode(&self) -> String {
        let mut payload = [0u8; PROOF_LEN + SECRET_LEN];
        payload[..PROOF_LEN].copy_from_slice(&self.proof);
        payload[PROOF_LEN..].copy_from_slice(&self.secret);
        format!("{}.{}.{}", self.session, self.generation, B64.encode(payload))
    }

    pub fn proof_hash(&self) -> TokenHash {
        sha256(&self.proof)
    }

    pub fn secret_hash(&self) -> TokenHash {
        sha256(&self.secret)
    }

    /// What the store is shown of this token.
    pub fn presented(&self) -> Presented {
        Presented {
            session: self.session.clone(),
            generation: self.generation,
            key_hash: self.proof_hash(),
            secret_hash: self.secret_hash(),
        }
    }

    /// The key sealing this token's successor; `info` binds it to the session and generation.
    fn sealing_key(&self) -> Option<LessSafeKey> {
        let mut ikm = [0u8; PROOF_LEN + SECRET_LEN];
        ikm[..PROOF_LEN].copy_from_slice(&self.proof);
        ikm[PROOF_LEN..].copy_from_slice(&self.secret);
        let info = [self.session.as_bytes(), &self.generation.to_be_bytes()];
        let prk = Salt::new(HKDF_SHA256, SEAL_SALT).extract(&ikm);
        // 32 bytes from HKDF-SHA256 do not fail (the limit is 255 × 32).
        prk.expand(&info, &AES_256_GCM).ok().map(|okm| LessSafeKey::new(UnboundKey::from(okm)))
    }

    /// `next`'s secret, sealed under a key only `self` (its predecessor) yields.
    /// `None` only if the crypto library refuses (it does not for these sizes).
    pub fn seal(&self, next: &Self) -> Option<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = random();
        let mut body = next.secret.to_vec();
        let aad = Aad::from(next.generation.to_be_bytes());
        self.sealing_key()?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad, &mut body)
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&body);
        Some(out)
    }

    /// What a rotation from `self` to `next` records.
    pub fn successor_record(
        &self,
        next: &Self,
        refresh_expires: u64,
        access_expires: u64,
    ) -> Option<Successor> {
        Some(Successor {
            secret_hash: next.secret_hash(),
            sealed: self.seal(next)?,
            refresh_expires,
            access_expires,
        })
    }

    /// The successor `seal` sealed, if `sealed` was sealed by this token's key.
    pub fn open(&self, sealed: &[u8]) -> Option<Self> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let generation = self.generation.checked_add(1)?;
        let mut body = body.to_vec();
        let secret =
            self.sealing_key()?.open_in_place(nonce, Aad::from(generation.to_be_bytes()), &mut body).ok()?;
        Some(Self { generation, secret: secret.try_into().ok()?, ..self.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_successor_sealing() {
        let t = RefreshToken::first("abcDEF_-12");
        let s = t.encode();
        assert_eq!(RefreshToken::parse(&s), Some(t.clone()));
        let next = t.successor();
        assert_eq!(next.generation, 1);
        assert_eq!(next.proof_hash(), t.proof_hash());
        assert_ne!(next.secret_hash(), t.secret_hash());
        let sealed = t.seal(&next).unwrap();
        assert_eq!(t.open(&sealed), Some(next.clone()));
        // Only the predecessor opens it: not the successor, not another session's token.
        assert_eq!(next.open(&sealed), None);
        assert_eq!(RefreshToken::first("abcDEF_-12").open(&sealed), None);
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert_eq!(t.open(&bad), None);
    }

    #[test]
    fn other_forms_are_not_tokens() {
        let good = RefreshToken::first("s1").encode();
        let legacy = crate::auth::tokens::random_token(32);
        for s in [
            legacy.as_str(),
            "",
            "s1..",
            "s1.0.",
            "s 1.0.AAAA",
            "s1.-1.AAAA",
            "s1.+1.AAAA",
            "s1.99999999999999999999999.AAAA",
            &good[..good.len() - 1],
            &format!("{good}A"),
            &format!("x.{good}"),
        ] {
            assert_eq!(RefreshToken::parse(s), None, "{s:?}");
        }
    }
}
