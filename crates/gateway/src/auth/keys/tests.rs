//! Keys: the algorithm comes from the key, and a token meets only keys of its own.

use serde_json::json;

use super::fixtures::{EC_PRIVATE, EC_PUBLIC, EC_X, EC_Y, P384_PUBLIC, RSA_N, RSA_PUBLIC};
use super::*;

fn rsa_jwk(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"kty": "RSA", "n": RSA_N, "e": "AQAB"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

fn ec_jwk(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

/// A key that only `choose` looks at (its material is never used).
fn key(kid: Option<&str>, alg: Algorithm) -> VerifyKey {
    VerifyKey {
        kid: kid.map(str::to_owned),
        alg,
        key: DecodingKey::from_secret(b"unused"),
    }
}

fn kids(choice: &Choice) -> Vec<(Option<String>, Algorithm)> {
    match choice {
        Choice::Try(keys) => keys.iter().map(|k| (k.kid.clone(), k.alg)).collect(),
        other => panic!("expected keys, got {other:?}"),
    }
}

#[test]
fn a_jwk_verifies_the_algorithm_of_its_type() {
    let alg = |v| VerifyKey::from_jwk(&v).map(|k| (k.kid, k.alg));
    assert_eq!(
        alg(rsa_jwk(json!({"kid": "r"}))),
        Ok((Some("r".into()), Algorithm::RS256))
    );
    assert_eq!(
        alg(rsa_jwk(json!({"alg": "PS256", "use": "sig"}))),
        Ok((None, Algorithm::PS256))
    );
    assert_eq!(
        alg(rsa_jwk(json!({"key_ops": ["verify"]}))),
        Ok((None, Algorithm::RS256))
    );
    assert_eq!(alg(ec_jwk(json!({}))), Ok((None, Algorithm::ES256)));
    assert_eq!(
        alg(ec_jwk(json!({"alg": "ES256"}))),
        Ok((None, Algorithm::ES256))
    );
    for bad in [
        // An alg that does not fit the key's type.
        rsa_jwk(json!({"alg": "ES256"})),
        rsa_jwk(json!({"alg": "HS256"})),
        ec_jwk(json!({"alg": "ES384"})),
        ec_jwk(json!({"alg": "RS256"})),
        // Not for signatures.
        rsa_jwk(json!({"use": "enc"})),
        rsa_jwk(json!({"key_ops": ["encrypt"]})),
        // Symmetric: never from a key set.
        json!({"kty": "oct", "k": "c2VjcmV0"}),
        json!({"kty": "EC", "crv": "P-521", "x": EC_X, "y": EC_Y}),
        json!({"kty": "RSA"}),
        json!("a string"),
    ] {
        assert!(VerifyKey::from_jwk(&bad).is_err(), "{bad}");
    }
}

#[test]
fn a_pem_verifies_the_algorithm_of_its_type() {
    let alg = |pem: &str| VerifyKey::from_pem(pem.as_bytes()).map(|k| k.alg);
    assert_eq!(alg(RSA_PUBLIC), Ok(Algorithm::RS256));
    assert_eq!(alg(EC_PUBLIC), Ok(Algorithm::ES256));
    assert_eq!(alg(P384_PUBLIC), Ok(Algorithm::ES384));
    assert!(alg(EC_PRIVATE).unwrap_err().contains("private key"));
    assert!(alg("not a key").is_err());
    assert!(alg("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
}

#[test]
fn hmac_tokens_meet_only_the_secret() {
    let secret = Arc::new(VerifyKey::hs256(b"s"));
    let rsa = KeySet::new(vec![key(None, Algorithm::RS256)]);
    assert_eq!(
        kids(&choose(Algorithm::HS256, None, Some(&secret), &rsa, None)),
        [(None, Algorithm::HS256)]
    );
    // No secret: HS256 is not accepted, whatever public keys there are (an HS256 token
    // "signed" with a public key never meets that key).
    assert!(matches!(
        choose(Algorithm::HS256, None, None, &rsa, Some(&rsa)),
        Choice::Refused(_)
    ));
    assert!(matches!(
        choose(Algorithm::HS384, None, Some(&secret), &rsa, None),
        Choice::Refused(_)
    ));
}

#[test]
fn public_key_tokens_meet_keys_of_their_alg_and_kid() {
    let files = KeySet::new(vec![key(None, Algorithm::ES256)]);
    let jwks = KeySet::new(vec![
        key(Some("a"), Algorithm::RS256),
        key(Some("b"), Algorithm::RS256),
        key(Some("e"), Algorithm::ES256),
    ]);
    let none = KeySet::default();
    assert_eq!(
        kids(&choose(
            Algorithm::RS256,
            Some("b"),
            None,
            &none,
            Some(&jwks)
        )),
        [(Some("b".into()), Algorithm::RS256)]
    );
    // Without a kid: every key of the algorithm.
    assert_eq!(
        kids(&choose(Algorithm::RS256, None, None, &none, Some(&jwks))).len(),
        2
    );
    // A key file without kid serves any kid of its algorithm, before the fetched keys.
    assert_eq!(
        kids(&choose(
            Algorithm::ES256,
            Some("e"),
            None,
            &files,
            Some(&jwks)
        )),
        [
            (None, Algorithm::ES256),
            (Some("e".into()), Algorithm::ES256)
        ]
    );
    // A kid naming a key of another algorithm: refused, no refresh.
    assert!(matches!(
        choose(Algorithm::ES256, Some("a"), None, &none, Some(&jwks)),
        Choice::Refused(_)
    ));
    assert!(matches!(
        choose(Algorithm::RS384, Some("a"), None, &none, Some(&jwks)),
        Choice::Refused(_)
    ));
    // An unknown kid: a refresh may bring it, when there is a key set to refresh.
    assert!(matches!(
        choose(Algorithm::RS256, Some("z"), None, &none, Some(&jwks)),
        Choice::Unknown
    ));
    assert!(matches!(
        choose(Algorithm::RS256, Some("z"), None, &files, None),
        Choice::Refused(_)
    ));
    assert!(matches!(
        choose(Algorithm::RS256, None, None, &none, Some(&none)),
        Choice::Unknown
    ));
}

#[test]
fn a_token_costs_a_bounded_number_of_checks() {
    let many = KeySet::new((0..MAX_KEYS).map(|_| key(None, Algorithm::RS256)).collect());
    assert_eq!(
        kids(&choose(Algorithm::RS256, Some("x"), None, &many, None)).len(),
        MAX_TRIES
    );
}

#[test]
fn key_files() {
    let dir = std::env::temp_dir().join(format!("wsgate-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let algs = |p: &std::path::Path| {
        from_file(p).map(|ks| ks.into_iter().map(|k| (k.kid, k.alg)).collect::<Vec<_>>())
    };
    assert_eq!(
        algs(&write("ec.pem", EC_PUBLIC)),
        Ok(vec![(None, Algorithm::ES256)])
    );
    let set = json!({"keys": [rsa_jwk(json!({"kid": "r1"})), ec_jwk(json!({"kid": "e1"}))]});
    assert_eq!(
        algs(&write("set.json", &set.to_string())),
        Ok(vec![
            (Some("r1".into()), Algorithm::RS256),
            (Some("e1".into()), Algorithm::ES256)
        ])
    );
    assert_eq!(
        algs(&write("one.json", &ec_jwk(json!({"kid": "k"})).to_string())),
        Ok(vec![(Some("k".into()), Algorithm::ES256)])
    );
    // A file is all good or refused (unlike a fetched set, which skips bad keys).
    let half = json!({"keys": [rsa_jwk(json!({})), {"kty": "oct", "k": "c2VjcmV0"}]});
    assert!(algs(&write("half.json", &half.to_string())).is_err());
    assert!(algs(&write("empty.json", r#"{"keys": []}"#)).is_err());
    assert!(algs(&write("private.pem", EC_PRIVATE)).is_err());
    let missing = from_file(&dir.join("missing.pem")).unwrap_err();
    assert!(
        missing.contains("--jwt-public-key") && missing.contains("missing.pem"),
        "{missing}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
