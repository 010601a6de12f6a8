//! ES256 (ECDSA over P-256 with SHA-256) verification against a key known in advance.
//!
//! Checking a signature computes u₁·G + u₂·Q. General-purpose libraries (aws-lc, ring, OpenSSL)
//! have a precomputed table for the generator G, but Q is a new point on every call: its
//! multiplication takes 256 doublings and is about two thirds of a verification. A gateway
//! verifies against the few keys it loaded, so each key gets a table like G's when it loads
//! (about 30 ms, 300 KB). Both multiplications then become 33 table additions with no doubling,
//! and a verification takes about 30 µs instead of aws-lc's 54 µs (benches/README.md).
//!
//! The point and scalar arithmetic is RustCrypto's `p256`, whose formulas are complete (no
//! special case for doubling or the identity). The code here is variable-time: every input
//! (the signature, the signed bytes, the public key) is public.

use std::sync::OnceLock;

use p256::elliptic_curve::group::Group;
use p256::elliptic_curve::ops::{Invert, Reduce};
use p256::elliptic_curve::sec1::FromEncodedPoint;
use p256::elliptic_curve::{Field, PrimeField, point::AffineCoordinates};
use p256::{AffinePoint, EncodedPoint, FieldBytes, ProjectivePoint, Scalar, U256};

/// Signed 8-bit windows: digit i of a scalar is in [-127, 128] and weighs 2^(8i). A 256-bit
/// scalar has 32 such digits plus a final carry of 0 or 1.
const WINDOWS: usize = 32;
const ROW: usize = 128;

/// j·2^(8i)·P for i < 32 and 1 ≤ j ≤ 128 (row i, entry j − 1), then 2^256·P for the carry.
struct Table(Box<[AffinePoint]>);

impl Table {
    fn new(point: ProjectivePoint) -> Self {
        let mut entries = Vec::with_capacity(WINDOWS * ROW + 1);
        let mut base = point;
        for _ in 0..WINDOWS {
            let mut multiple = base;
            for j in 1..=ROW {
                entries.push(multiple.to_affine());
                if j < ROW {
                    multiple += base;
                }
            }
            for _ in 0..8 {
                base = base.double();
            }
        }
        entries.push(base.to_affine());
        Self(entries.into_boxed_slice())
    }

    /// `acc += k·P`.
    fn add_multiple(&self, acc: &mut ProjectivePoint, k: &Scalar) {
        for (i, digit) in digits(k).into_iter().enumerate() {
            let entry = |d: i16| &self.0[i * ROW + usize::from(d.unsigned_abs()) - 1];
            match digit {
                0 => {}
                d if d > 0 => *acc += entry(d),
                d => *acc -= entry(d),
            }
        }
    }
}

/// The signed base-256 digits of `k`, least significant first (Booth recoding).
fn digits(k: &Scalar) -> [i16; WINDOWS + 1] {
    let be = k.to_bytes();
    let mut out = [0i16; WINDOWS + 1];
    let mut carry = 0;
    for (i, digit) in out.iter_mut().take(WINDOWS).enumerate() {
        let v = i16::from(be[WINDOWS - 1 - i]) + carry;
        (*digit, carry) = if v > 128 { (v - 256, 1) } else { (v, 0) };
    }
    out[WINDOWS] = carry;
    out
}

fn generator() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| Table::new(ProjectivePoint::GENERATOR))
}

/// A P-256 public key with its multiplication table.
pub struct PublicKey {
    table: Table,
}

impl PublicKey {
    /// `point`: the uncompressed SEC1 encoding (0x04 ‖ x ‖ y), which must lie on the curve.
    pub fn new(point: &[u8]) -> Result<Self, String> {
        if point.len() != 65 || point[0] != 4 {
            return Err("not an uncompressed P-256 point".into());
        }
        let encoded = EncodedPoint::from_bytes(point).map_err(|_| "not a P-256 point".to_string())?;
        let affine = Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&encoded))
            .ok_or("not a point on P-256")?;
        // Built here, while keys load (start-up or a reload off the runtime), never by a request.
        generator();
        Ok(Self { table: Table::new(affine.into()) })
    }

    /// Checks a JWS ES256 signature (r ‖ s, 32 bytes each, RFC 7518 §3.4) over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let (Some(r), Some(s)) = (signature.get(..32), signature.get(32..)) else {
            return false;
        };
        let (Some(r), Some(s)) = (nonzero_scalar(r), nonzero_scalar(s)) else {
            return false;
        };
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let z = <Scalar as Reduce<U256>>::reduce_bytes(FieldBytes::from_slice(digest.as_ref()));
        let Some(w) = Option::<Scalar>::from(s.invert_vartime()) else {
            return false;
        };
        let mut point = ProjectivePoint::IDENTITY;
        generator().add_multiple(&mut point, &(z * w));
        self.table.add_multiple(&mut point, &(r * w));
        // One inversion: `ProjectivePoint::is_identity` would cost two more.
        let point = point.to_affine();
        if bool::from(point.is_identity()) {
            return false;
        }
        // x(R) is below p; reducing it mod n is what the verification compares with r.
        <Scalar as Reduce<U256>>::reduce_bytes(&point.x()) == r
    }
}

/// A scalar in [1, n − 1] from exactly 32 big-endian bytes.
fn nonzero_scalar(bytes: &[u8]) -> Option<Scalar> {
    if bytes.len() != 32 {
        return None;
    }
    Option::<Scalar>::from(Scalar::from_repr(*FieldBytes::from_slice(bytes)))
        .filter(|s| !bool::from(s.is_zero()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
    };
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    fn random_bytes<const N: usize>(rng: &SystemRandom) -> [u8; N] {
        let mut b = [0u8; N];
        rng.fill(&mut b).unwrap();
        b
    }

    fn scalar_from(bytes: [u8; 32]) -> Scalar {
        <Scalar as Reduce<U256>>::reduce_bytes(FieldBytes::from_slice(&bytes))
    }

    #[test]
    fn table_multiplication_matches_double_and_add() {
        let rng = SystemRandom::new();
        let p = ProjectivePoint::GENERATOR * scalar_from(random_bytes(&rng));
        let table = Table::new(p);
        // Digits at the edges of the recoding: 0x80 (128, no carry), 0x81 and 0xff (negative
        // digits with a carry that ripples up), 0x7f, zeros, and the largest scalars, n − 1 − k.
        let mut scalars = vec![Scalar::ZERO, Scalar::ONE];
        scalars.extend((1..=8u64).map(|k| -Scalar::from(k)));
        for byte in [0x00u8, 0x7f, 0x80, 0x81, 0xfe, 0xff] {
            // Below n: n's first four bytes are ff, its fifth 00.
            let mut below_n = [byte; 32];
            below_n[..4].copy_from_slice(&[0xff, 0xff, 0xff, 0xfe]);
            for bytes in [[byte; 32], below_n] {
                let k = Option::<Scalar>::from(Scalar::from_repr(bytes.into()));
                scalars.extend(k);
            }
            let mut alternating = [byte; 32];
            alternating.iter_mut().step_by(2).for_each(|b| *b = 0x80);
            scalars.push(scalar_from(alternating));
        }
        scalars.extend((0..200).map(|_| scalar_from(random_bytes(&rng))));
        for k in scalars {
            let mut acc = ProjectivePoint::IDENTITY;
            table.add_multiple(&mut acc, &k);
            assert_eq!(acc, p * k, "k = {:?}", k.to_bytes());
        }
    }

    #[test]
    fn digits_reconstruct_the_scalar() {
        let rng = SystemRandom::new();
        for _ in 0..100 {
            let k = scalar_from(random_bytes(&rng));
            let mut sum = Scalar::ZERO;
            let mut weight = Scalar::ONE;
            for d in digits(&k) {
                assert!((-127..=128).contains(&d));
                let magnitude = Scalar::from(u64::from(d.unsigned_abs()));
                sum += if d < 0 { -magnitude * weight } else { magnitude * weight };
                weight *= Scalar::from(256u64);
            }
            assert_eq!(sum, k);
        }
    }

    /// Every answer must equal aws-lc's, for valid signatures and for each kind of damage.
    #[test]
    fn agrees_with_aws_lc() {
        let rng = SystemRandom::new();
        for _ in 0..4 {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
            let public = pair.public_key().as_ref();
            let ours = PublicKey::new(public).unwrap();
            let theirs = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public);
            let other = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
            let other = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, other.as_ref()).unwrap();
            for round in 0..50u32 {
                let message: [u8; 48] = random_bytes(&rng);
                let sig = pair.sign(&rng, &message).unwrap();
                let sig = sig.as_ref().to_vec();
                assert!(ours.verify(&message, &sig));
                assert!(theirs.verify(&message, &sig).is_ok());
                let mut cases: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                let bit = usize::from(u16::from_le_bytes(random_bytes(&rng)) % (64 * 8));
                let mut flipped = sig.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                cases.push((message.to_vec(), flipped));
                let mut changed = message.to_vec();
                changed[round as usize % 48] ^= 0x20;
                cases.push((changed, sig.clone()));
                cases.push((message.to_vec(), other.sign(&rng, &message).unwrap().as_ref().to_vec()));
                // The other valid signature of the same message: (r, n − s).
                let s = Option::<Scalar>::from(Scalar::from_repr(*FieldBytes::from_slice(&sig[32..])));
                let mut high_s = sig[..32].to_vec();
                high_s.extend_from_slice(&(-s.unwrap()).to_bytes());
                cases.push((message.to_vec(), high_s));
                for (m, s) in cases {
                    assert_eq!(ours.verify(&m, &s), theirs.verify(&m, &s).is_ok(), "round {round}");
                }
            }
        }
    }

    #[test]
    fn refuses_out_of_range_and_misshapen_signatures() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let key = PublicKey::new(pair.public_key().as_ref()).unwrap();
        let message = b"header.payload";
        let sig = pair.sign(&rng, message).unwrap().as_ref().to_vec();
        let (r, s) = (&sig[..32], &sig[32..]);
        let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
        let n_plus_r = {
            // r + n overflows 256 bits only if r > 2^256 − n; then it is not a 32-byte value.
            let mut sum = [0u8; 32];
            let mut carry = 0u16;
            for i in (0..32).rev() {
                let v = u16::from(r[i]) + u16::from(n[i]) + carry;
                sum[i] = v as u8;
                carry = v >> 8;
            }
            (carry == 0).then_some(sum)
        };
        let join = |a: &[u8], b: &[u8]| [a, b].concat();
        let zero = [0u8; 32];
        let mut bad = vec![
            join(&zero, s),
            join(r, &zero),
            join(&n, s),
            join(r, &n),
            join(&[0xff; 32], s),
            join(r, &[0xff; 32]),
            sig[..63].to_vec(),
            [sig.as_slice(), &[0]].concat(),
            Vec::new(),
        ];
        bad.extend(n_plus_r.map(|rn| join(&rn, s)));
        for b in bad {
            assert!(!key.verify(message, &b), "{b:02x?}");
        }
        assert!(key.verify(message, &sig));
    }

    #[test]
    fn refuses_points_off_the_curve() {
        let mut point = [0u8; 65];
        point[0] = 4;
        assert!(PublicKey::new(&point).is_err());
        let g = ProjectivePoint::generator().to_affine();
        let mut encoded = [4u8; 65];
        encoded[1..33].copy_from_slice(&g.x());
        assert!(PublicKey::new(&encoded).is_err(), "y must match x");
        assert!(PublicKey::new(&encoded[..33]).is_err());
    }

    /// Project Wycheproof's ECDSA P-256 / SHA-256 vectors in the r ‖ s form JWS uses: edge
    /// cases of the arithmetic (large x(R), special u₁/u₂, r or s out of range) that random
    /// signatures never reach. Each answer must be the expected one, and aws-lc's.
    #[test]
    fn wycheproof_vectors() {
        use wycheproof::TestResult;
        use wycheproof::ecdsa::{TestName, TestSet};
        let set = TestSet::load(TestName::EcdsaSecp256r1Sha256P1363).unwrap();
        let mut checked = 0;
        for group in &set.test_groups {
            let public: &[u8] = group.key.key.as_ref();
            let theirs = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public);
            let ours = PublicKey::new(public).expect("every group's key is a valid P-256 point");
            for test in &group.tests {
                let got = ours.verify(&test.msg, &test.sig);
                let aws = theirs.verify(&test.msg, &test.sig).is_ok();
                let name = format!("tcId {} ({})", test.tc_id, test.comment);
                match test.result {
                    TestResult::Valid => assert!(got, "{name}: valid, refused"),
                    TestResult::Invalid => assert!(!got, "{name}: invalid, accepted"),
                    TestResult::Acceptable => {}
                }
                assert_eq!(got, aws, "{name}: differs from aws-lc");
                checked += 1;
            }
        }
        assert_eq!(checked, set.number_of_tests);
    }

    /// x(R) in [n, p): r is x(R) − n. Built from R backwards, Q = r⁻¹(s·R − z·G), so that the
    /// reduction mod n before the comparison is what decides.
    #[test]
    fn accepts_when_x_of_r_exceeds_the_order() {
        let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
        let message = b"header.payload";
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
        let z = <Scalar as Reduce<U256>>::reduce_bytes(FieldBytes::from_slice(digest.as_ref()));
        let mut found = 0;
        for t in 1u8..=40 {
            // x = n + t, below p; about half of such x are on the curve.
            let mut compressed = [0u8; 33];
            compressed[0] = 2;
            compressed[1..].copy_from_slice(&n);
            compressed[32] += t;
            let encoded = EncodedPoint::from_bytes(compressed).unwrap();
            let Some(big_r) = Option::<AffinePoint>::from(AffinePoint::from_encoded_point(&encoded)) else {
                continue;
            };
            let r = Scalar::from(u64::from(t));
            let s = Scalar::from(0x1234_5678_9abc_def1u64);
            let q = (ProjectivePoint::from(big_r) * s - ProjectivePoint::GENERATOR * z) * r.invert().unwrap();
            let public = q.to_affine().to_encoded_point(false);
            let sig = [r.to_bytes(), s.to_bytes()].concat();
            let ours = PublicKey::new(public.as_bytes()).unwrap();
            let theirs = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public.as_bytes());
            assert!(theirs.verify(message, &sig).is_ok(), "the construction is wrong (t = {t})");
            assert!(ours.verify(message, &sig), "t = {t}");
            // r' = x(R) itself (not reduced) is above n: out of range, refused.
            let unreduced = [&compressed[1..], s.to_bytes().as_slice()].concat();
            assert!(!ours.verify(message, &unreduced));
            found += 1;
        }
        assert!(found > 5);
    }

    /// Q = G and Q = −G: the two multiplications share points, so the accumulator meets its
    /// own double and its negation (the formulas' exceptional cases, complete in p256).
    #[test]
    fn keys_equal_to_plus_or_minus_the_generator() {
        let rng = SystemRandom::new();
        for d in [Scalar::ONE, -Scalar::ONE, Scalar::from(2u64)] {
            let public = (ProjectivePoint::GENERATOR * d).to_affine().to_encoded_point(false);
            let pair = EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &d.to_bytes(),
                public.as_bytes(),
            )
            .unwrap();
            let ours = PublicKey::new(public.as_bytes()).unwrap();
            for _ in 0..20 {
                let message: [u8; 16] = random_bytes(&rng);
                let sig = pair.sign(&rng, &message).unwrap();
                assert!(ours.verify(&message, sig.as_ref()));
                assert!(!ours.verify(&message[1..], sig.as_ref()));
            }
            // u₁·G + u₂·Q = O when z = −r·d: R is the identity, refused rather than compared.
            let message = b"m";
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, message);
            let z = <Scalar as Reduce<U256>>::reduce_bytes(FieldBytes::from_slice(digest.as_ref()));
            let r = -(z * d.invert().unwrap());
            let sig = [r.to_bytes(), Scalar::from(7u64).to_bytes()].concat();
            assert!(!ours.verify(message, &sig));
            let theirs = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public.as_bytes());
            assert!(theirs.verify(message, &sig).is_err());
        }
    }

    fn hex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
