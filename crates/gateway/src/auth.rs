//! Who a connection is: a verified token (HS256 with `--jwt-secret`; RS/ES/EdDSA with
//! `--jwt-public-key` files or the keys of `--jwks-url`), or (development mode) query
//! parameters.
//!
//! [`keys`] holds the keys and picks those that may check a token, each with its own
//! algorithm; [`verify`] checks a token with them; [`jwks`] keeps a key set URL's keys
//! fresh, its fetches paced by [`refresh_gate`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use wsgate_protocol::names;
use wsgate_protocol::server::Member;

use crate::config::JwtArgs;
use crate::reserved::SYSTEM_ROOM;

pub mod jwks;
pub mod keys;
pub mod refresh_gate;
mod verify;

use keys::{KeySet, VerifyKey};
use verify::{Refusal, Tokens};

/// The identity of one connection.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user, as other users see them.
    pub user: Member,
    /// Private rooms the token grants; `None` in development mode (no grants).
    pub grants: Option<Vec<String>>,
    /// When the token expires (the session is closed with 1008 then).
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// Whether this identity may join (and read) `room`, given whether the room is
    /// private (its namespace's `private`).
    pub fn may_enter(&self, room: &str, private: bool) -> bool {
        if room == SYSTEM_ROOM {
            // The dashboard's room: granted by a token's `rooms` claim; open in
            // development mode, where there are no tokens.
            return self
                .grants
                .as_ref()
                .is_none_or(|g| g.iter().any(|x| x == room));
        }
        if !private {
            return true;
        }
        self.grants.as_ref().is_some_and(|grants| {
            grants.iter().any(|g| match g.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => g == room,
            })
        })
    }
}

/// Why a connection was refused before the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where one is required.
    #[error("missing token")]
    Missing,
    /// The token is expired.
    #[error("token expired")]
    Expired,
    /// The token's `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The token is malformed, badly signed, of an algorithm no key here verifies,
    /// lacks a required claim, or names another issuer or audience.
    #[error("invalid token")]
    Invalid,
    /// The token names a key (`kid`) that none of the keys at hand is, even after the
    /// key set refresh this token was allowed.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// A development-mode identity parameter is unusable.
    #[error("{0}")]
    BadParameter(&'static str),
}

/// The token of an `Authorization: Bearer …` header (the scheme is case-insensitive).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Turns a request's credentials into an [`Identity`].
pub struct Authenticator {
    /// The keys and claim rules; `None` is development mode.
    tokens: Option<Tokens>,
}

impl Authenticator {
    /// HS256 tokens when `secret` is given, development mode otherwise. `issuer` and
    /// `audience`, when given, must match the token's `iss` and `aud`; `nbf` is always
    /// checked when present.
    pub fn new(secret: Option<&str>, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let tokens = secret.map(|s| Tokens {
            secret: Some(Arc::new(VerifyKey::hs256(s.as_bytes()))),
            files: KeySet::default(),
            jwks: None,
            rules: verify::rules(issuer, audience),
        });
        Authenticator { tokens }
    }

    /// The authenticator the token flags describe: the key files are read now, the key
    /// set URL is fetched once [`Authenticator::start`] runs.
    ///
    /// # Errors
    /// A message naming a key file that cannot be read or holds no usable public key.
    pub fn from_args(args: &JwtArgs) -> Result<Self, String> {
        if !args.tokens_required() {
            return Ok(Authenticator { tokens: None });
        }
        let files = Self::key_files(args)?;
        let jwks = args.jwks_url.as_ref().map(|url| {
            jwks::Jwks::new(
                url.clone(),
                Duration::from_secs(args.jwks_min_refresh_s),
                Duration::from_secs(args.jwks_refresh_s),
            )
        });
        Ok(Authenticator {
            tokens: Some(Tokens {
                secret: args
                    .jwt_secret
                    .as_ref()
                    .map(|s| Arc::new(VerifyKey::hs256(s.as_bytes()))),
                files: KeySet::new(files),
                jwks,
                rules: verify::rules(args.jwt_issuer.as_deref(), args.jwt_audience.as_deref()),
            }),
        })
    }

    /// The keys of the `--jwt-public-key` files.
    ///
    /// # Errors
    /// A message naming a file that cannot be read or holds no usable public key.
    pub fn key_files(args: &JwtArgs) -> Result<Vec<VerifyKey>, String> {
        let mut found = Vec::new();
        for path in &args.jwt_public_key {
            found.extend(keys::from_file(path)?);
        }
        Ok(found)
    }

    /// Starts the key set refresher, if a key set URL is configured, and waits for its
    /// first fetch at most `within`. A node whose provider is down starts all the same:
    /// tokens it cannot verify get 401 until a fetch succeeds (retried every
    /// `--jwks-min-refresh-s`).
    pub async fn start(
        &self,
        cancel: CancellationToken,
        within: Duration,
        metrics: jwks::JwksMetrics,
    ) {
        let Some(jwks) = self.tokens.as_ref().and_then(|t| t.jwks.as_ref()) else {
            return;
        };
        if jwks.url().starts_with("http://") {
            tracing::warn!(
                url = jwks.url(),
                "--jwks-url over plain http: whoever sits on the path can make tokens; use https"
            );
        }
        jwks.spawn(cancel, metrics);
        let keys = jwks.first_fetch(within).await;
        if keys {
            tracing::info!(kids = ?jwks.keys().kids(), "JWKS loaded");
        } else {
            tracing::warn!(
                "no JWKS keys yet: tokens they would verify get 401 until a fetch succeeds"
            );
        }
    }

    /// Whether tokens are required.
    pub fn requires_token(&self) -> bool {
        self.tokens.is_some()
    }

    /// Authenticates from the query's `token`/`user_id`/`username` and the
    /// `Authorization` header, with the keys at hand.
    ///
    /// # Errors
    /// An [`AuthError`] to answer with 401 (or 400 for a bad development parameter).
    pub fn authenticate(
        &self,
        query: &[(String, String)],
        authorization: Option<&str>,
    ) -> Result<Identity, AuthError> {
        self.identify(query, authorization).map_err(log_refusal)
    }

    /// [`Authenticator::authenticate`], and when the token names a key the key set
    /// does not hold, once more after the refresh this may trigger (see
    /// [`jwks::Jwks::refresh_for_unknown_key`]: never more than one fetch per
    /// `--jwks-min-refresh-s`, whatever the number of such tokens).
    ///
    /// # Errors
    /// As [`Authenticator::authenticate`].
    pub async fn authenticate_refreshing(
        &self,
        query: &[(String, String)],
        authorization: Option<&str>,
    ) -> Result<Identity, AuthError> {
        match self.identify(query, authorization) {
            Err(r) if r.error == AuthError::UnknownKey => {
                if let Some(jwks) = self.tokens.as_ref().and_then(|t| t.jwks.as_ref()) {
                    jwks.refresh_for_unknown_key().await;
                }
                self.authenticate(query, authorization)
            }
            other => other.map_err(log_refusal),
        }
    }

    fn identify(
        &self,
        query: &[(String, String)],
        authorization: Option<&str>,
    ) -> Result<Identity, Refusal> {
        let param = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        let Some(tokens) = &self.tokens else {
            return development_identity(param("user_id"), param("username"))
                .map_err(|e| Refusal::new(e, "bad development parameter"));
        };
        let token = param("token")
            .or_else(|| authorization.and_then(bearer))
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::new(AuthError::Missing, "no token"))?;
        token_identity(tokens, token)
    }

    /// The identity `token` gives, checked exactly as a handshake's token is (the same
    /// keys, algorithms and claim rules, and one key set refresh for an unknown `kid`):
    /// what a session's `refresh` offers. `None` in development mode, where there is
    /// nothing to check a token with.
    pub async fn verify_refreshing(&self, token: &str) -> Option<Result<Identity, AuthError>> {
        let tokens = self.tokens.as_ref()?;
        Some(match token_identity(tokens, token) {
            Err(r) if r.error == AuthError::UnknownKey => {
                if let Some(jwks) = &tokens.jwks {
                    jwks.refresh_for_unknown_key().await;
                }
                token_identity(tokens, token).map_err(log_refusal)
            }
            other => other.map_err(log_refusal),
        })
    }
}

/// The identity a token gives, if it is good now with the keys at hand.
fn token_identity(tokens: &Tokens, token: &str) -> Result<Identity, Refusal> {
    let c = tokens.verify(token)?;
    if !names::valid_user_id(&c.sub) {
        return Err(Refusal::new(AuthError::Invalid, "unusable sub"));
    }
    let username = c
        .name
        .filter(|n| names::valid_username(n))
        .unwrap_or_else(|| c.sub.clone());
    // An `exp` past what the clock can represent is refused, not a panic (found by
    // fuzzing).
    let expires_at = UNIX_EPOCH
        .checked_add(Duration::from_secs(c.exp))
        .ok_or(Refusal::new(AuthError::Invalid, "exp out of range"))?;
    Ok(Identity {
        user: Member {
            user_id: c.sub,
            username,
        },
        grants: Some(c.rooms.unwrap_or_default()),
        expires_at: Some(expires_at),
    })
}

/// Logs why a token was refused (never the token), and gives the answer.
fn log_refusal(r: Refusal) -> AuthError {
    if !matches!(r.error, AuthError::BadParameter(_)) {
        tracing::debug!(reason = r.reason, "token refused");
    }
    r.error
}

/// A development-mode identity from the query's `user_id` and `username`.
fn development_identity(
    user_id: Option<&str>,
    username: Option<&str>,
) -> Result<Identity, AuthError> {
    let user_id = match user_id {
        Some(u) if names::valid_user_id(u) => u.to_owned(),
        Some(_) => {
            return Err(AuthError::BadParameter(
                "user_id must be 1-128 bytes without control characters",
            ))
        }
        None => format!("anon-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
    };
    let username = match username {
        Some(n) if !n.is_empty() && names::valid_username(n) => n.to_owned(),
        Some("") | None => user_id.clone(),
        Some(_) => {
            return Err(AuthError::BadParameter(
                "username must be at most 128 bytes without control characters",
            ))
        }
    };
    Ok(Identity {
        user: Member { user_id, username },
        grants: None,
        expires_at: None,
    })
}

#[cfg(test)]
mod tests;
