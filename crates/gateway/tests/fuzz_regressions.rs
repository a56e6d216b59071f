//! Regression tests from fuzzing (`fuzz/`, run by `tests/fuzz/run.sh`): the inputs the
//! `http_inputs` and `api_bodies` fuzzers found, and hostile HTTP API bodies kept here
//! whether or not they ever broke anything.

use std::panic::{catch_unwind, AssertUnwindSafe};

use http::StatusCode;
use http_body_util::BodyExt;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use wsgate_gateway::api::{parse_notify, parse_publish, PublishTarget};
use wsgate_gateway::auth::{AuthError, Authenticator};
use wsgate_gateway::query::Query;
use wsgate_protocol::server::ServerFrame;

const SECRET: &str = "fuzz-secret";

fn signed(claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Found by `http_inputs` (claims of a correctly signed token): an `exp` past what
/// `SystemTime` can hold (beyond 2^63 - 1 seconds) panicked in `auth.rs`
/// (`UNIX_EPOCH + Duration::from_secs(exp)`: "overflow when adding duration to
/// instant") instead of answering. Fuzz input (base64, first byte = the case):
/// `Mnsic3ViIjoiYSIsImV4cCI6OTIyMzM3MjAzNjg1NDc3NzgwN30=`, i.e. the claims
/// `{"sub":"a","exp":9223372036854777807}`.
#[test]
fn a_token_with_an_exp_beyond_system_time_does_not_panic() {
    let auth = Authenticator::new(Some(SECRET), None, None);
    for exp in [9_223_372_036_854_777_807_u64, 1 << 63, u64::MAX] {
        let token = signed(&json!({"sub":"a","exp":exp}));
        let result = catch_unwind(AssertUnwindSafe(|| {
            auth.authenticate(&[("token".into(), token.clone())], None)
        }));
        match result {
            Ok(Ok(id)) => assert!(id.expires_at.is_some()),
            Ok(Err(e)) => assert_eq!(e, AuthError::Invalid, "exp {exp}"),
            Err(_) => panic!("authenticating a token with exp {exp} panicked"),
        }
    }
    // The largest exp that fits is fine.
    let token = signed(&json!({"sub":"a","exp":i64::MAX}));
    assert!(auth.authenticate(&[("token".into(), token)], None).is_ok());
}

/// The fuzz input of the test above, byte for byte, through the fuzz target's path.
#[test]
fn the_exp_overflow_fuzz_input() {
    // base64 `Mnsic3ViIjoiYSIsImV4cCI6OTIyMzM3MjAzNjg1NDc3NzgwN30=`
    let input = br#"2{"sub":"a","exp":9223372036854777807}"#;
    let claims: Value = serde_json::from_slice(&input[1..]).unwrap();
    let token = signed(&claims);
    let auth = Authenticator::new(Some(SECRET), None, None);
    let result = catch_unwind(AssertUnwindSafe(|| {
        auth.authenticate(&[], Some(&format!("Bearer {token}")))
    }));
    assert!(result.is_ok(), "panicked on {claims}");
}

/// The status and `error.code` of a refusal.
async fn refused(
    r: Result<impl std::fmt::Debug, Box<http::Response<wsgate_gateway::response::Body>>>,
) -> (StatusCode, String, usize) {
    let res = *r.expect_err("accepted");
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let message_len = v["error"]["message"].as_str().unwrap().len();
    (
        status,
        v["error"]["code"].as_str().unwrap().to_owned(),
        message_len,
    )
}

async fn publish_code(body: &[u8]) -> String {
    let (status, code, len) = refused(parse_publish(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(len <= 1024, "the message echoes the input: {len} bytes");
    code
}

async fn notify_code(body: &[u8]) -> String {
    let (status, code, len) = refused(parse_notify(body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(len <= 1024, "the message echoes the input: {len} bytes");
    code
}

#[tokio::test]
async fn deep_nesting_and_broken_bodies_are_bad_json() {
    let deep = "[".repeat(10_000);
    let deep_data = format!(
        r#"{{"room":"a","data":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    for body in [
        deep.as_bytes(),
        deep_data.as_bytes(),
        b"",
        b"\xff\xfe",
        br#"{"room":"a","data":"\xff"}"#,
        br#"{"room":"a","data":1e400}"#,
        br#"{"room":"a","data":"\ud800"}"#,
        br#"{"room":"a","data":"a\u0000b"}  x"#,
        b"\"a string\"",
        b"[1,2]",
        b"null",
    ] {
        assert_eq!(
            publish_code(body).await,
            "bad_json",
            "{:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            notify_code(body).await,
            "bad_json",
            "{:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[tokio::test]
async fn one_mib_strings() {
    let big = "x".repeat(1024 * 1024);
    // The size limit is the reader's (413 before parsing); what is parsed is validated.
    assert_eq!(
        publish_code(json!({"room":big,"data":1}).to_string().as_bytes()).await,
        "invalid_field"
    );
    assert_eq!(
        notify_code(
            json!({"user_id":"a","title":big,"body":""})
                .to_string()
                .as_bytes()
        )
        .await,
        "invalid_field"
    );
    assert_eq!(
        notify_code(
            json!({"user_id":"a","title":"t","body":"","action_url":big})
                .to_string()
                .as_bytes()
        )
        .await,
        "invalid_field"
    );
    let mut unknown = json!({"room":"a","data":1});
    unknown[big.as_str()] = json!(1);
    assert_eq!(
        publish_code(unknown.to_string().as_bytes()).await,
        "invalid_field"
    );
    let ok = parse_publish(json!({"broadcast":true,"data":big}).to_string().as_bytes()).unwrap();
    assert_eq!(ok.data, json!(big));
}

#[tokio::test]
async fn numbers_where_strings_belong() {
    for body in [
        json!({"room":5,"data":1}),
        json!({"user_id":5,"data":1}),
        json!({"broadcast":1,"data":1}),
        json!({"broadcast":"true","data":1}),
    ] {
        assert_eq!(
            publish_code(body.to_string().as_bytes()).await,
            "invalid_field",
            "{body}"
        );
    }
    for body in [
        json!({"user_id":5,"title":"t","body":"b"}),
        json!({"user_ids":"a","title":"t","body":"b"}),
        json!({"user_ids":[5],"title":"t","body":"b"}),
        json!({"user_id":"a","title":5,"body":"b"}),
        json!({"user_id":"a","title":"t","body":5}),
        json!({"user_id":"a","title":"t","body":"b","kind":0}),
        json!({"user_id":"a","title":"t","body":"b","action_url":7}),
    ] {
        assert_eq!(
            notify_code(body.to_string().as_bytes()).await,
            "invalid_field",
            "{body}"
        );
    }
}

#[tokio::test]
async fn nul_bytes_and_surrogates() {
    assert_eq!(
        publish_code(br#"{"room":"a\u0000","data":1}"#).await,
        "invalid_field"
    );
    assert_eq!(
        publish_code(br#"{"user_id":"a\u0000","data":1}"#).await,
        "invalid_field"
    );
    assert_eq!(
        notify_code(br#"{"user_ids":["a","b\u0000"],"title":"t","body":"b"}"#).await,
        "invalid_field"
    );
    // Text fields are any text, NUL included.
    let n = parse_notify(br#"{"user_id":"a","title":"t\u0000","body":"\u0000"}"#).unwrap();
    assert_eq!((n.title.as_str(), n.body.as_str()), ("t\0", "\0"));
    for s in [r"\ud800", r"\udfff", r"\ud800\u0041"] {
        let body = format!(r#"{{"user_id":"a","title":"{s}","body":"b"}}"#);
        assert_eq!(notify_code(body.as_bytes()).await, "bad_json", "{body}");
    }
    let ok = parse_publish(br#"{"user_id":"\ud83d\ude00","data":null}"#).unwrap();
    assert_eq!(ok.target, PublishTarget::User("😀".into()));
    assert_eq!(ok.data, Value::Null);
}

/// Found by `api_bodies` (and by `server_frame` in a stored publish): a float in `data`
/// must reach members as the back end wrote it. Same root cause as the protocol crate's
/// `the_float_ref_fuzz_input` (serde_json's default float parser is not correctly
/// rounded; its `float_roundtrip` feature is). The fuzz input, base64:
/// `eyJicm9hZGNhc3QiOnRydWUsImRhdGEiOi05MjIzNzIwMzY4NTQzNzIwMzY4NTQ5MjIzMzcyMDM2ODU0Nzc1ODA3Nzc1ODA5fQ==`
#[test]
fn float_data_is_kept_exactly() {
    for text in [
        "-9223720368543720368549223372036854775807775809",
        "1.0715660391465826e-75",
        "-1.603964615428183e+143",
    ] {
        let want: f64 = text.parse().unwrap();
        let body = format!(r#"{{"broadcast":true,"data":{text}}}"#);
        let req = parse_publish(body.as_bytes()).unwrap();
        let got = req.data.as_f64();
        assert_eq!(got, Some(want), "data {text} was read as {got:?}");
        // And what members get reads back the same.
        let frame = ServerFrame::Broadcast {
            data: req.data,
            ts: "t".into(),
        }
        .encode();
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["data"].as_f64(), Some(want), "{frame}");
    }
}

#[test]
fn hostile_development_identities() {
    let auth = Authenticator::new(None, None, None);
    for (query, ok) in [
        ("user_id=a%00b", false),
        ("user_id=%0A", false),
        ("user_id=", false),
        ("user_id=a&username=%1B[31m", false),
        ("user_id=%ZZ", true),
        ("user_id=%F0%9F%98%80&username=", true),
        ("user_id=%FF", true),
    ] {
        let uri: http::Uri = format!("/ws?{query}").parse().unwrap();
        let q = Query::of(&uri);
        let r = auth.authenticate(q.pairs(), None);
        assert_eq!(r.is_ok(), ok, "{query}: {r:?}");
        if let Err(e) = r {
            assert!(matches!(e, AuthError::BadParameter(_)), "{query}: {e:?}");
        }
    }
    let long = format!("/ws?user_id={}", "x".repeat(129));
    let q = Query::of(&long.parse().unwrap());
    assert!(auth.authenticate(q.pairs(), None).is_err());
}
