//! Verification keys and which of them may check a token: each key carries the one
//! algorithm it verifies, taken from the configuration or the JWK (`kty`, `crv`,
//! `alg`), never from a token; a token is checked only with keys of exactly its
//! header's `alg` (an HS256 token never meets an RSA key, whatever it was signed with).

use std::sync::Arc;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Most signature checks one token may cost (a token without `kid` is tried against
/// each key of its algorithm, up to this many).
pub const MAX_TRIES: usize = 8;
/// Most keys taken from one key set (a 1 MiB document could hold thousands).
pub const MAX_KEYS: usize = 100;

/// One key a signature can be checked with.
#[derive(Clone)]
pub struct VerifyKey {
    /// The key id tokens name it by (`kid`); `None` for a PEM file or a JWK without one.
    pub kid: Option<String>,
    /// The one algorithm this key verifies.
    pub alg: Algorithm,
    /// The key material.
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} key {:?}", self.alg, self.kid)
    }
}

impl VerifyKey {
    /// The HS256 key of `--jwt-secret`.
    pub fn hs256(secret: &[u8]) -> Self {
        VerifyKey {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        }
    }

    /// A public key from a JWK (a JSON object of a key set).
    ///
    /// # Errors
    /// Why the key cannot verify tokens: malformed, symmetric, meant for encryption, of
    /// a curve or type not supported, or with an `alg` that does not fit its type.
    pub fn from_jwk(value: &serde_json::Value) -> Result<Self, String> {
        let jwk: Jwk =
            serde_json::from_value(value.clone()).map_err(|e| format!("malformed JWK: {e}"))?;
        if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
            return Err("its \"use\" is not \"sig\"".into());
        }
        if matches!(&jwk.common.key_operations, Some(ops) if !ops.contains(&KeyOperations::Verify))
        {
            return Err("its \"key_ops\" lack \"verify\"".into());
        }
        let alg = algorithm_of(&jwk)?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key material: {e}"))?;
        Ok(VerifyKey {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        })
    }

    /// A public key from a PEM file: RSA (RS256), EC P-256 (ES256), EC P-384 (ES384) or
    /// Ed25519 (EdDSA).
    ///
    /// # Errors
    /// Why it is not such a key (a private key is refused: only the public half belongs
    /// on a gateway).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let text = String::from_utf8_lossy(pem);
        if text.contains("PRIVATE KEY-----") {
            return Err("this is a private key: give the gateway the public key only".into());
        }
        let (key, alg) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            (k, Algorithm::RS256)
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            let jwk =
                Jwk::from_decoding_key(&k, None).map_err(|e| format!("unusable EC key: {e}"))?;
            match &jwk.algorithm {
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    (k, Algorithm::ES256)
                }
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
                    (k, Algorithm::ES384)
                }
                _ => return Err("unsupported EC curve (P-256 or P-384)".into()),
            }
        } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            (k, Algorithm::EdDSA)
        } else {
            return Err("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".into());
        };
        Ok(VerifyKey {
            kid: None,
            alg,
            key,
        })
    }
}

/// The algorithm a JWK verifies: its `alg` when it fits the key type, else the type's
/// own (RSA: RS256; EC: by curve; OKP Ed25519: EdDSA).
fn algorithm_of(jwk: &Jwk) -> Result<Algorithm, String> {
    let declared = jwk.common.key_algorithm;
    let (natural, fits): (Algorithm, &[KeyAlgorithm]) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (
            Algorithm::RS256,
            &[
                KeyAlgorithm::RS256,
                KeyAlgorithm::RS384,
                KeyAlgorithm::RS512,
                KeyAlgorithm::PS256,
                KeyAlgorithm::PS384,
                KeyAlgorithm::PS512,
            ],
        ),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => (Algorithm::ES256, &[KeyAlgorithm::ES256]),
            EllipticCurve::P384 => (Algorithm::ES384, &[KeyAlgorithm::ES384]),
            _ => return Err("unsupported EC curve (P-256 or P-384)".into()),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            (Algorithm::EdDSA, &[KeyAlgorithm::EdDSA])
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are not taken from key sets (use --jwt-secret)".into())
        }
        _ => return Err("unsupported key type".into()),
    };
    match declared {
        None => Ok(natural),
        Some(a) if fits.contains(&a) => Algorithm::try_from(a).map_err(|e| e.to_string()),
        Some(a) => Err(format!("its alg {a} does not fit its key type")),
    }
}

/// An immutable set of keys (a JWKS as fetched, or the key files).
#[derive(Debug, Default)]
pub struct KeySet {
    /// The keys, in the order they came.
    keys: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// A set of `keys`.
    pub fn new(keys: Vec<VerifyKey>) -> Self {
        KeySet {
            keys: keys.into_iter().map(Arc::new).collect(),
        }
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s it holds, in order (keys without one are left out).
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }

    /// Keys that may check a token of `alg` naming `kid`: keys of exactly that
    /// algorithm whose `kid` is the token's (a key or a token without `kid` matches
    /// any).
    pub fn candidates<'a>(
        &'a self,
        alg: Algorithm,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Arc<VerifyKey>> + 'a {
        self.keys.iter().filter(move |k| {
            k.alg == alg
                && match (kid, k.kid.as_deref()) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        })
    }

    /// Whether a key of another algorithm than `alg` is named `kid`.
    pub fn names_other_alg(&self, alg: Algorithm, kid: &str) -> bool {
        self.keys
            .iter()
            .any(|k| k.alg != alg && k.kid.as_deref() == Some(kid))
    }
}

/// Which keys a token with header `alg` and `kid` is checked with.
#[derive(Debug)]
pub enum Choice {
    /// These, in turn (at most [`MAX_TRIES`]); the token is good if one verifies it.
    Try(Vec<Arc<VerifyKey>>),
    /// No key may check it: its `alg` is not accepted here, or its `kid` names a key of
    /// another algorithm.
    Refused(&'static str),
    /// No key is known for it yet: a key set refresh might bring one.
    Unknown,
}

/// The keys for a token's header: the HS256 `secret` for HS256 tokens only; public
/// keys (`files`, then the fetched `jwks`) of exactly the token's algorithm otherwise.
/// `jwks` is `None` when no key set URL is configured (an unknown key is then final).
pub fn choose(
    alg: Algorithm,
    kid: Option<&str>,
    secret: Option<&Arc<VerifyKey>>,
    files: &KeySet,
    jwks: Option<&KeySet>,
) -> Choice {
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return match secret {
            Some(s) if s.alg == alg => Choice::Try(vec![s.clone()]),
            _ => Choice::Refused("algorithm not accepted"),
        };
    }
    let empty = KeySet::default();
    let fetched = jwks.unwrap_or(&empty);
    let keys: Vec<_> = files
        .candidates(alg, kid)
        .chain(fetched.candidates(alg, kid))
        .take(MAX_TRIES)
        .cloned()
        .collect();
    if !keys.is_empty() {
        return Choice::Try(keys);
    }
    if kid.is_some_and(|k| files.names_other_alg(alg, k) || fetched.names_other_alg(alg, k)) {
        return Choice::Refused("alg does not match the key's");
    }
    if jwks.is_some() {
        Choice::Unknown
    } else {
        Choice::Refused("no key for this algorithm")
    }
}

/// The keys of a `--jwt-public-key` file: a PEM public key, or a JWK or JWKS (JSON).
/// Unlike a fetched set, every key of a file must be usable.
///
/// # Errors
/// A message naming the file and what is wrong with it.
pub fn from_file(path: &std::path::Path) -> Result<Vec<VerifyKey>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
    let bad = |why: String| format!("--jwt-public-key {}: {why}", path.display());
    if bytes.len() > 1 << 20 {
        return Err(bad("over 1 MiB".into()));
    }
    if !bytes.trim_ascii_start().starts_with(b"{") {
        return VerifyKey::from_pem(&bytes).map(|k| vec![k]).map_err(bad);
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("bad JSON: {e}")))?;
    let keys = match doc.get("keys").and_then(|k| k.as_array()) {
        Some(set) => set
            .iter()
            .map(VerifyKey::from_jwk)
            .collect::<Result<Vec<_>, _>>(),
        None => VerifyKey::from_jwk(&doc).map(|k| vec![k]),
    }
    .map_err(bad)?;
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(bad(format!("must hold 1 to {MAX_KEYS} keys")));
    }
    Ok(keys)
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
