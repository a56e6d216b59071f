//! A token's check: its header picks the keys ([`choose`]), one of them must verify
//! its signature with the key's own algorithm, and its claims must hold (`exp`, `sub`,
//! `nbf` when present, `iss` and `aud` when configured).

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use serde::Deserialize;

use super::jwks::Jwks;
use super::keys::{choose, Choice, KeySet, VerifyKey};
use super::AuthError;

/// The claims a token carries.
#[derive(Debug, Deserialize)]
pub(super) struct Claims {
    /// The user id.
    pub(super) sub: String,
    /// The display name.
    #[serde(default)]
    pub(super) name: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    pub(super) exp: u64,
    /// Private rooms granted.
    #[serde(default)]
    pub(super) rooms: Option<Vec<String>>,
}

/// Why a token was refused: what the client is told, and what the log says.
#[derive(Debug)]
pub(super) struct Refusal {
    /// The answer (401 and its message).
    pub(super) error: AuthError,
    /// The reason for the log, never any part of the token.
    pub(super) reason: &'static str,
}

impl Refusal {
    pub(super) fn new(error: AuthError, reason: &'static str) -> Self {
        Refusal { error, reason }
    }
}

/// Everything tokens are checked against.
pub(super) struct Tokens {
    /// The HS256 key (`--jwt-secret`).
    pub(super) secret: Option<Arc<VerifyKey>>,
    /// Public keys from files (`--jwt-public-key`).
    pub(super) files: KeySet,
    /// The key set of `--jwks-url`.
    pub(super) jwks: Option<Arc<Jwks>>,
    /// Claim rules; its `algorithms` is set to each key's own for each check.
    pub(super) rules: Validation,
}

/// The claim rules: `exp` and `sub` required, no leeway, `nbf` checked when present,
/// `iss` and `aud` required and checked when configured.
pub(super) fn rules(issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    let mut required = vec!["exp", "sub"];
    // No leeway: a token past its `exp` is refused at the handshake, exactly when a
    // connected session holding it is closed with 1008.
    v.leeway = 0;
    v.validate_nbf = true;
    match audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    if let Some(iss) = issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

impl Tokens {
    /// The claims of `token`, if it is good now with the keys at hand.
    ///
    /// # Errors
    /// A [`Refusal`]; [`AuthError::UnknownKey`] when a key set refresh might help.
    pub(super) fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let header = decode_header(token)
            .map_err(|_| Refusal::new(AuthError::Invalid, "malformed token"))?;
        let fetched = self.jwks.as_ref().map(|j| j.keys());
        let keys = match choose(
            header.alg,
            header.kid.as_deref(),
            self.secret.as_ref(),
            &self.files,
            fetched.as_deref(),
        ) {
            Choice::Try(keys) => keys,
            Choice::Refused(why) => return Err(Refusal::new(AuthError::Invalid, why)),
            Choice::Unknown => {
                return Err(Refusal::new(AuthError::UnknownKey, "no key with this kid"))
            }
        };
        let mut refusal = Refusal::new(AuthError::Invalid, "bad signature");
        for key in keys {
            let mut rules = self.rules.clone();
            rules.algorithms = vec![key.alg];
            match decode::<Claims>(token, &key.key, &rules) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    let (why, other_key_may_do) = refusal_of(e.kind());
                    refusal = why;
                    // The signature held and a claim did not: no other key changes that.
                    if !other_key_may_do {
                        break;
                    }
                }
            }
        }
        Err(refusal)
    }
}

/// What a verification error tells the client and the log, and whether another key
/// might verify the token (the signature did not hold with this one).
fn refusal_of(kind: &ErrorKind) -> (Refusal, bool) {
    let key_failed = matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidKeyFormat
    );
    let (error, reason) = match kind {
        ErrorKind::ExpiredSignature => (AuthError::Expired, "expired"),
        ErrorKind::ImmatureSignature => (AuthError::NotYetValid, "nbf in the future"),
        ErrorKind::InvalidSignature => (AuthError::Invalid, "bad signature"),
        ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidKeyFormat => (AuthError::Invalid, "unusable key"),
        ErrorKind::InvalidIssuer => (AuthError::Invalid, "wrong issuer"),
        ErrorKind::InvalidAudience => (AuthError::Invalid, "wrong audience"),
        ErrorKind::MissingRequiredClaim(_) => (AuthError::Invalid, "a required claim is missing"),
        ErrorKind::InvalidAlgorithm => (AuthError::Invalid, "alg does not match the key's"),
        _ => (AuthError::Invalid, "malformed token"),
    };
    (Refusal::new(error, reason), key_failed)
}
