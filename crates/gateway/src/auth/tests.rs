//! Unit tests of token and development-mode identities.

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

/// An authenticator over the token flags `args` (on top of the defaults).
fn from_flags(args: &[&str]) -> Authenticator {
    use clap::Parser;
    let config = crate::Config::parse_from(std::iter::once("wsgate").chain(args.iter().copied()));
    config.jwt.validate().unwrap();
    Authenticator::from_args(&config.jwt).unwrap()
}

fn key_file(name: &str, body: &str) -> String {
    let dir = std::env::temp_dir().join(format!("wsgate-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

fn es256(claims: serde_json::Value, kid: Option<&str>) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = kid.map(str::to_owned);
    let key = EncodingKey::from_ec_pem(keys::fixtures::EC_PRIVATE.as_bytes()).unwrap();
    encode(&header, &claims, &key).unwrap()
}

fn with_token(t: String) -> Vec<(String, String)> {
    vec![("token".to_owned(), t)]
}

#[test]
fn public_key_tokens() {
    let ec = key_file("ec.pem", keys::fixtures::EC_PUBLIC);
    let auth = from_flags(&["--jwt-public-key", &ec, "--jwt-issuer", "https://idp"]);
    assert!(auth.requires_token());
    let claims = json!({"sub": "alice", "exp": now() + 60, "iss": "https://idp"});
    let id = auth
        .authenticate(&with_token(es256(claims.clone(), None)), None)
        .unwrap();
    assert_eq!(id.user.user_id, "alice");
    // A kid does not matter to a key file without one.
    assert!(auth
        .authenticate(&with_token(es256(claims, Some("any"))), None)
        .is_ok());
    // Claims are checked as for HS256.
    let wrong_iss = es256(
        json!({"sub": "a", "exp": now() + 60, "iss": "https://evil"}),
        None,
    );
    assert_eq!(
        auth.authenticate(&with_token(wrong_iss), None).unwrap_err(),
        AuthError::Invalid
    );
    let expired = es256(
        json!({"sub": "a", "exp": now() - 60, "iss": "https://idp"}),
        None,
    );
    assert_eq!(
        auth.authenticate(&with_token(expired), None).unwrap_err(),
        AuthError::Expired
    );
    // Without a secret, HS256 tokens are refused whatever they were signed with.
    assert_eq!(
        auth.authenticate(
            &with_token(token(
                json!({"sub": "a", "exp": now() + 60, "iss": "https://idp"}),
                "k"
            )),
            None
        )
        .unwrap_err(),
        AuthError::Invalid
    );
}

/// The classic confusion: an HS256 token whose HMAC key is the server's public key
/// (which anyone may have). Refused with the public key alone, and with a secret too.
#[test]
fn an_hs256_token_keyed_with_the_public_key_is_refused() {
    let rsa = key_file("rsa.pem", keys::fixtures::RSA_PUBLIC);
    let ec = key_file("ec2.pem", keys::fixtures::EC_PUBLIC);
    let claims = json!({"sub": "mallory", "exp": now() + 60});
    for (pem, path) in [
        (keys::fixtures::RSA_PUBLIC, &rsa),
        (keys::fixtures::EC_PUBLIC, &ec),
    ] {
        let forged = token(claims.clone(), pem);
        for flags in [
            vec!["--jwt-public-key", path.as_str()],
            vec!["--jwt-public-key", path.as_str(), "--jwt-secret", "s3cret"],
        ] {
            let auth = from_flags(&flags);
            assert_eq!(
                auth.authenticate(&with_token(forged.clone()), None)
                    .unwrap_err(),
                AuthError::Invalid,
                "{flags:?}"
            );
        }
    }
    // With both configured, each kind of token is checked by its own key.
    let both = from_flags(&["--jwt-public-key", &ec, "--jwt-secret", "s3cret"]);
    assert!(both
        .authenticate(&with_token(token(claims.clone(), "s3cret")), None)
        .is_ok());
    assert!(both
        .authenticate(&with_token(es256(claims.clone(), None)), None)
        .is_ok());
    // An ES256 header over an RS256 key set: never checked with the RSA key.
    let rsa_only = from_flags(&["--jwt-public-key", &rsa]);
    assert_eq!(
        rsa_only
            .authenticate(&with_token(es256(claims, None)), None)
            .unwrap_err(),
        AuthError::Invalid
    );
}

/// Before its first fetch a key set holds nothing: its tokens name an unknown key
/// (what makes the handshake ask for a refresh), never a panic or an open door.
#[test]
fn a_key_set_not_fetched_yet_knows_no_key() {
    let auth = from_flags(&["--jwks-url", "http://127.0.0.1:9/jwks.json"]);
    assert!(auth.requires_token());
    let t = es256(json!({"sub": "a", "exp": now() + 60}), Some("k1"));
    assert_eq!(
        auth.authenticate(&with_token(t), None).unwrap_err(),
        AuthError::UnknownKey
    );
    assert!(!from_flags(&[]).requires_token());
}

#[tokio::test]
async fn a_refresh_token_is_checked_as_a_handshake_token_is() {
    let auth = Authenticator::new(Some("s3cret"), Some("issuer"), None);
    let exp = now() + 90;
    let good = token(
        json!({"sub":"alice","exp":exp,"iss":"issuer","rooms":["private:a"]}),
        "s3cret",
    );
    let id = auth.verify_refreshing(&good).await.unwrap().unwrap();
    assert_eq!(id.user.user_id, "alice");
    assert_eq!(id.expires_at, Some(UNIX_EPOCH + Duration::from_secs(exp)));
    assert!(id.may_enter("private:a", true));
    for (bad, why) in [
        (
            token(
                json!({"sub":"alice","exp":now()-1,"iss":"issuer"}),
                "s3cret",
            ),
            AuthError::Expired,
        ),
        (
            token(json!({"sub":"alice","exp":exp,"iss":"issuer"}), "other"),
            AuthError::Invalid,
        ),
        (
            token(json!({"sub":"alice","exp":exp,"iss":"elsewhere"}), "s3cret"),
            AuthError::Invalid,
        ),
        ("not a token".to_owned(), AuthError::Invalid),
    ] {
        assert_eq!(
            auth.verify_refreshing(&bad).await.unwrap().unwrap_err(),
            why
        );
    }
    // Development mode has no keys to check a token with.
    let dev = Authenticator::new(None, None, None);
    assert!(dev.verify_refreshing(&good).await.is_none());
}
