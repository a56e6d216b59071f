//! Who a connection is: a verified HS256 token, or (development mode) query parameters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use wsgate_protocol::names;
use wsgate_protocol::server::Member;

use crate::reserved::SYSTEM_ROOM;

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
    /// The token is malformed, badly signed, lacks a required claim, or names another
    /// issuer or audience.
    #[error("invalid token")]
    Invalid,
    /// A development-mode identity parameter is unusable.
    #[error("{0}")]
    BadParameter(&'static str),
}

/// The token of an `Authorization: Bearer …` header (the scheme is case-insensitive).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    name: Option<String>,
    exp: u64,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

/// Turns a request's credentials into an [`Identity`].
pub struct Authenticator {
    /// The HS256 key; `None` is development mode.
    key: Option<(DecodingKey, Validation)>,
}

impl Authenticator {
    /// Token mode when `secret` is given, development mode otherwise. `issuer` and
    /// `audience`, when given, must match the token's `iss` and `aud`; `nbf` is always
    /// checked when present.
    pub fn new(secret: Option<&str>, issuer: Option<&str>, audience: Option<&str>) -> Self {
        let key = secret.map(|s| {
            let mut v = Validation::new(Algorithm::HS256);
            let mut required = vec!["exp", "sub"];
            // No leeway: a token past its `exp` is refused at the handshake, exactly when
            // a connected session holding it is closed with 1008.
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
            (DecodingKey::from_secret(s.as_bytes()), v)
        });
        Authenticator { key }
    }

    /// Whether tokens are required.
    pub fn requires_token(&self) -> bool {
        self.key.is_some()
    }

    /// Authenticates from the query's `token`/`user_id`/`username` and the
    /// `Authorization` header.
    ///
    /// # Errors
    /// An [`AuthError`] to answer with 401 (or 400 for a bad development parameter).
    pub fn authenticate(
        &self,
        query: &[(String, String)],
        authorization: Option<&str>,
    ) -> Result<Identity, AuthError> {
        let param = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        match &self.key {
            Some((key, validation)) => {
                let token = param("token")
                    .or_else(|| authorization.and_then(bearer))
                    .filter(|t| !t.is_empty())
                    .ok_or(AuthError::Missing)?;
                let data =
                    decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                        jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                            AuthError::NotYetValid
                        }
                        _ => AuthError::Invalid,
                    })?;
                let c = data.claims;
                if !names::valid_user_id(&c.sub) {
                    return Err(AuthError::Invalid);
                }
                let username = c
                    .name
                    .filter(|n| names::valid_username(n))
                    .unwrap_or_else(|| c.sub.clone());
                // An `exp` past what the clock can represent is refused, not a panic
                // (found by fuzzing).
                let expires_at = UNIX_EPOCH
                    .checked_add(Duration::from_secs(c.exp))
                    .ok_or(AuthError::Invalid)?;
                Ok(Identity {
                    user: Member {
                        user_id: c.sub,
                        username,
                    },
                    grants: Some(c.rooms.unwrap_or_default()),
                    expires_at: Some(expires_at),
                })
            }
            None => {
                let user_id = match param("user_id") {
                    Some(u) if names::valid_user_id(u) => u.to_owned(),
                    Some(_) => {
                        return Err(AuthError::BadParameter(
                            "user_id must be 1-128 bytes without control characters",
                        ))
                    }
                    None => format!("anon-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
                };
                let username = match param("username") {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn tokens() {
        let auth = Authenticator::new(Some("s3cret"), None, None);
        let good = token(
            json!({"sub":"alice","name":"Alice","exp":now()+60,"rooms":["private:a","private:team-*"]}),
            "s3cret",
        );
        let id = auth
            .authenticate(&[("token".into(), good.clone())], None)
            .unwrap();
        assert_eq!(
            id.user,
            Member {
                user_id: "alice".into(),
                username: "Alice".into()
            }
        );
        assert!(id.may_enter("lobby", false));
        assert!(id.may_enter("private:a", true));
        assert!(id.may_enter("private:team-x", true));
        assert!(!id.may_enter("private:b", true));
        let header = format!("Bearer {good}");
        assert!(auth.authenticate(&[], Some(&header)).is_ok());
        let header = format!("bearer  {good}");
        assert!(auth.authenticate(&[], Some(&header)).is_ok());
        assert_eq!(
            auth.authenticate(&[], None).unwrap_err(),
            AuthError::Missing
        );
        let expired = token(json!({"sub":"a","exp":now()-600}), "s3cret");
        assert_eq!(
            auth.authenticate(&[("token".into(), expired)], None)
                .unwrap_err(),
            AuthError::Expired
        );
        let wrong_key = token(json!({"sub":"a","exp":now()+60}), "other");
        assert_eq!(
            auth.authenticate(&[("token".into(), wrong_key)], None)
                .unwrap_err(),
            AuthError::Invalid
        );
        let no_exp = token(json!({"sub":"a"}), "s3cret");
        assert_eq!(
            auth.authenticate(&[("token".into(), no_exp)], None)
                .unwrap_err(),
            AuthError::Invalid
        );
        assert_eq!(
            auth.authenticate(&[("token".into(), "garbage".into())], None)
                .unwrap_err(),
            AuthError::Invalid
        );
    }

    #[test]
    fn nbf_issuer_and_audience() {
        let open = Authenticator::new(Some("k"), None, None);
        let strict = Authenticator::new(Some("k"), Some("https://idp"), Some("wsgate"));
        let t = |c: serde_json::Value| vec![("token".to_owned(), token(c, "k"))];
        let exp = now() + 60;
        // `aud` is not checked when none is configured (it used to refuse every token
        // that carried one).
        assert!(open
            .authenticate(&t(json!({"sub":"a","exp":exp,"aud":"other"})), None)
            .is_ok());
        assert_eq!(
            open.authenticate(&t(json!({"sub":"a","exp":exp,"nbf":now()+600})), None)
                .unwrap_err(),
            AuthError::NotYetValid
        );
        assert!(open
            .authenticate(&t(json!({"sub":"a","exp":exp,"nbf":now()-1})), None)
            .is_ok());
        let good = json!({"sub":"a","exp":exp,"iss":"https://idp","aud":["x","wsgate"]});
        assert!(strict.authenticate(&t(good), None).is_ok());
        for bad in [
            json!({"sub":"a","exp":exp,"iss":"https://idp"}),
            json!({"sub":"a","exp":exp,"aud":"wsgate"}),
            json!({"sub":"a","exp":exp,"iss":"https://evil","aud":"wsgate"}),
            json!({"sub":"a","exp":exp,"iss":"https://idp","aud":"other"}),
        ] {
            assert_eq!(
                strict.authenticate(&t(bad.clone()), None).unwrap_err(),
                AuthError::Invalid,
                "{bad}"
            );
        }
    }

    #[test]
    fn development_mode() {
        let auth = Authenticator::new(None, None, None);
        let id = auth
            .authenticate(&[("user_id".into(), "bob".into())], None)
            .unwrap();
        assert_eq!(id.user.username, "bob");
        assert!(!id.may_enter("private:x", true));
        let anon = auth.authenticate(&[], None).unwrap();
        assert!(anon.user.user_id.starts_with("anon-"));
        assert!(auth
            .authenticate(&[("user_id".into(), "a\u{1}".into())], None)
            .is_err());
    }
}
