//! Regression tests from fuzzing (`fuzz/`, run by `tests/fuzz/run.sh`): inputs the
//! fuzzers found, and hostile inputs kept here whether or not they ever broke anything
//! (deep nesting, 1 MiB strings, numbers where strings belong, NUL bytes, lone
//! surrogates, every frame type with every field missing, extreme ids).

use serde_json::{json, Value};
use wsgate_protocol::client::{parse, Command, ParseLimits};
use wsgate_protocol::server::{frame_id, frame_type, stored_room_id, ServerFrame};
use wsgate_protocol::{ErrorCode, FrameError, MessageId};

/// The gateway's default `--max-message-bytes`.
const LIMITS: ParseLimits = ParseLimits {
    max_content_bytes: 65_536,
};
const MIB: usize = 1024 * 1024;

fn code(text: &str) -> ErrorCode {
    err(text).code
}

fn err(text: &str) -> FrameError {
    let e = parse(text, &LIMITS).expect_err(&format!("accepted: {:.80}", text));
    assert!(
        e.message.len() <= 200,
        "the error message echoes the input: {} bytes",
        e.message.len()
    );
    e
}

/// Found by `client_frame` after ~100,000 runs (and by `server_frame` in a publish's
/// `data`): serde_json's default float parser is not correctly rounded, so some numbers
/// are read one step off, and the `ref` a client gets back is not the one it sent (the
/// same happens to floats in the `data` of `POST /api/publish`). serde_json's
/// `float_roundtrip` feature makes it exact. The fuzz input, base64:
/// `eyJ0eXBlIjoiaGlzdG9yeSIsInJvb20iOiJhIiwibGltaXQiOjE4NDQ2NzQ0OTU1MTYxNiwicmVmIjoxODQ0Njc0NDA3MzQ0MDczNzA5NTUxNjE1fQ==`
#[test]
fn the_float_ref_fuzz_input() {
    let input =
        r#"{"type":"history","room":"a","limit":184467449551616,"ref":1844674407344073709551615}"#;
    let want: f64 = "1844674407344073709551615".parse().unwrap();
    let e = err(input);
    assert_eq!(e.code, ErrorCode::InvalidField);
    let got = e.reference.as_ref().and_then(Value::as_f64);
    assert_eq!(got, Some(want), "the ref was read as {got:?}");
    let answer = ServerFrame::Error {
        code: e.code,
        message: e.message,
        reference: e.reference,
    }
    .encode();
    let echoed: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(echoed["ref"].as_f64(), Some(want), "{answer}");
}

/// More numbers of the same kind (found by a brute-force check of the same property).
#[test]
fn a_float_ref_is_echoed_exactly() {
    for text in [
        "1.0715660391465826e-75",
        "-1.81996730402717e-179",
        "-1.603964615428183e+143",
        "-9.643915712060552e-234",
        "3.31844674407371e+43",
    ] {
        let want: f64 = text.parse().unwrap();
        let frame = parse(&format!(r#"{{"type":"ping","ref":{text}}}"#), &LIMITS).unwrap();
        let got = frame.reference.as_ref().and_then(Value::as_f64);
        assert_eq!(got, Some(want), "ref {text} was read as {got:?}");
        let pong = ServerFrame::Pong {
            reference: frame.reference,
        }
        .encode();
        let echoed: Value = serde_json::from_str(&pong).unwrap();
        assert_eq!(
            echoed["ref"].as_f64(),
            Some(want),
            "{text} echoed in {pong}"
        );
    }
}

#[test]
fn deep_nesting_is_bad_json_without_overflowing_the_stack() {
    for text in [
        "[".repeat(10_000),
        "{\"a\":".repeat(10_000),
        format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
        // A valid frame carrying a deep value in a field it does not define: serde_json
        // stops at 128 levels, so this is refused rather than ignored.
        format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    ] {
        assert_eq!(code(&text), ErrorCode::BadJson, "{:.40}", text);
    }
    // Shallow enough, an unknown deep field is ignored.
    let ok = format!(
        r#"{{"type":"ping","x":{}{}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    assert_eq!(parse(&ok, &LIMITS).unwrap().command, Command::Ping);
}

#[test]
fn one_mib_strings() {
    let big = "x".repeat(MIB);
    let cases = [
        (
            json!({"type":"message","room":"lobby","content":big}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"direct","to":"bob","content":big}),
            ErrorCode::InvalidField,
        ),
        (json!({"type":"join","room":big}), ErrorCode::InvalidField),
        (
            json!({"type":"direct","to":big,"content":"x"}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"join","room":"a","since":big}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"join","room":"a","epoch":big}),
            ErrorCode::InvalidField,
        ),
        (json!({"type":big}), ErrorCode::UnknownType),
        (
            json!({"type":"mark_read","ids":[big]}),
            ErrorCode::InvalidField,
        ),
    ];
    for (frame, want) in cases {
        assert_eq!(code(&frame.to_string()), want);
    }
    // A 1 MiB key or unknown field is ignored (the WebSocket limit bounds a frame).
    let mut obj = json!({"type":"ping"});
    obj[big.as_str()] = json!(1);
    assert!(parse(&obj.to_string(), &LIMITS).is_ok());
    // A 1 MiB string that is not even closed.
    assert_eq!(code(&format!(r#"{{"type":"{big}"#)), ErrorCode::BadJson);
}

#[test]
fn numbers_where_strings_belong() {
    for (frame, want) in [
        (json!({"type":5}), ErrorCode::UnknownType),
        (json!({"type":1e300}), ErrorCode::UnknownType),
        (json!({"type":"join","room":5}), ErrorCode::InvalidField),
        (
            json!({"type":"join","room":"a","since":170}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"join","room":"a","epoch":1}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"message","room":"a","content":6.02e23}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"direct","to":0,"content":"x"}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"history","room":"a","before":1}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"notifications","before":1}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"mark_read","ids":[1]}),
            ErrorCode::InvalidField,
        ),
        // And the other way round.
        (
            json!({"type":"history","room":"a","limit":"50"}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"typing","room":"a","is_typing":"true"}),
            ErrorCode::InvalidField,
        ),
        (
            json!({"type":"typing","room":"a","is_typing":1}),
            ErrorCode::InvalidField,
        ),
    ] {
        assert_eq!(code(&frame.to_string()), want, "{frame}");
    }
    // Numbers out of every range.
    for text in [
        r#"{"type":"history","room":"a","limit":18446744073709551616}"#,
        r#"{"type":"history","room":"a","limit":-1}"#,
        r#"{"type":"history","room":"a","limit":1.0}"#,
        r#"{"type":"history","room":"a","limit":1e2}"#,
    ] {
        assert_eq!(code(text), ErrorCode::InvalidField, "{text}");
    }
    assert_eq!(code(r#"{"type":"ping","ref":1e400}"#), ErrorCode::BadJson);
}

#[test]
fn nul_bytes() {
    // Escaped NUL: content is any text and keeps it; names may not hold it.
    let f = parse(
        r#"{"type":"message","room":"a","content":"a\u0000b"}"#,
        &LIMITS,
    )
    .unwrap();
    assert_eq!(
        f.command,
        Command::Message {
            room: "a".into(),
            content: "a\0b".into()
        }
    );
    for text in [
        r#"{"type":"join","room":"a\u0000"}"#,
        r#"{"type":"direct","to":"bob\u0000","content":"x"}"#,
        r#"{"type":"join","room":"a","epoch":"e\u0000"}"#,
        r#"{"type":"join","room":"a","since":"1-0\u0000"}"#,
    ] {
        assert_eq!(code(text), ErrorCode::InvalidField, "{text}");
    }
    assert_eq!(code(r#"{"type":"ping\u0000"}"#), ErrorCode::UnknownType);
    // A raw NUL is a control character JSON does not allow, in a string or outside.
    assert_eq!(
        code("{\"type\":\"message\",\"room\":\"a\",\"content\":\"a\0b\"}"),
        ErrorCode::BadJson
    );
    assert_eq!(code("{\"type\":\"ping\"}\0"), ErrorCode::BadJson);
    assert_eq!(code("\0"), ErrorCode::BadJson);
}

#[test]
fn lone_surrogates_are_bad_json() {
    for s in [
        r"\ud800",
        r"\udc00",
        r"\udfff",
        r"\ud800\u0041",
        r"\ud800\ud800",
        r"x\ud83d",
    ] {
        for text in [
            format!(r#"{{"type":"message","room":"a","content":"{s}"}}"#),
            format!(r#"{{"type":"ping","ref":"{s}"}}"#),
            format!(r#"{{"type":"{s}"}}"#),
        ] {
            assert_eq!(code(&text), ErrorCode::BadJson, "{text}");
        }
    }
    // A proper pair is one character.
    let f = parse(
        r#"{"type":"message","room":"a","content":"\ud83d\ude00"}"#,
        &LIMITS,
    )
    .unwrap();
    assert_eq!(
        f.command,
        Command::Message {
            room: "a".into(),
            content: "😀".into()
        }
    );
}

#[test]
fn every_frame_type_with_every_field_missing() {
    for (kind, want) in [
        ("join", Some(ErrorCode::InvalidField)),
        ("leave", Some(ErrorCode::InvalidField)),
        ("message", Some(ErrorCode::InvalidField)),
        ("typing", Some(ErrorCode::InvalidField)),
        ("direct", Some(ErrorCode::InvalidField)),
        ("history", Some(ErrorCode::InvalidField)),
        ("mark_read", Some(ErrorCode::InvalidField)),
        ("ping", None),
        ("notifications", None),
    ] {
        for reference in [json!(null), json!(7), json!("r")] {
            let text = json!({"type":kind,"ref":reference}).to_string();
            match want {
                Some(want) => {
                    let e = err(&text);
                    assert_eq!(e.code, want, "{text}");
                    let r = Some(reference.clone()).filter(|r| !r.is_null());
                    assert_eq!(e.reference, r, "the error lost the ref: {text}");
                }
                None => assert_eq!(parse(&text, &LIMITS).unwrap().command.kind(), kind),
            }
        }
    }
    // Each required field missing on its own, the others present.
    for text in [
        r#"{"type":"message","content":"x"}"#,
        r#"{"type":"message","room":"a"}"#,
        r#"{"type":"typing","is_typing":true}"#,
        r#"{"type":"typing","room":"a"}"#,
        r#"{"type":"direct","content":"x"}"#,
        r#"{"type":"direct","to":"bob"}"#,
        r#"{"type":"join","since":"1-0","epoch":"e"}"#,
        r#"{"type":"history","before":"1-0","limit":5}"#,
    ] {
        assert_eq!(code(text), ErrorCode::InvalidField, "{text}");
    }
    assert_eq!(
        code(r#"{"room":"a","content":"x"}"#),
        ErrorCode::UnknownType
    );
}

#[test]
fn extreme_message_ids() {
    let max = "18446744073709551615-18446744073709551615";
    assert_eq!(
        max.parse::<MessageId>(),
        Ok(MessageId::new(u64::MAX, u64::MAX))
    );
    assert_eq!(MessageId::new(u64::MAX, u64::MAX).to_string(), max);
    assert_eq!(
        "00000000000000000000-00000000000000000000".parse::<MessageId>(),
        Ok(MessageId::ZERO)
    );
    for bad in [
        "18446744073709551616-0",
        "0-18446744073709551616",
        "000000000000000000000-0",
        "1-0\0",
        "\u{661}-0", // a non-ASCII digit
        "1_0-0",
        "0x1-0",
    ] {
        assert!(bad.parse::<MessageId>().is_err(), "{bad:?}");
    }
    let f = parse(
        &json!({"type":"join","room":"a","since":max}).to_string(),
        &LIMITS,
    )
    .unwrap();
    assert!(matches!(
        f.command,
        Command::Join { since: Some(id), .. } if id == MessageId::new(u64::MAX, u64::MAX)
    ));
}

#[test]
fn prefix_readers_on_broken_frames() {
    for frame in [
        "",
        "{",
        r#"{"type":""#,
        r#"{"type":"message"#,
        r#"{"type":"message","id":"1-0"#,
        r#"{"type":"message","id":"1-0","room":"#,
        r#"{"type":"message","id":"1-0","room":"lobby"#,
        r#"{"type":"message","id":"","room":"lobby"}"#,
        r#"{"type":"message","id":"1-0\","room":"lobby"}"#,
        r#"{"type":"message","id":"18446744073709551616-0","room":"a"}"#,
        r#"{"type":"direct","id":"1-0","room":"a"}"#,
        r#"{"type" : "message","id":"1-0","room":"a"}"#,
        "{\"type\":\"m\u{e9}ssage\",\"id\":\"1-0\",\"room\":\"a\"}",
    ] {
        if let Some((room, id)) = stored_room_id(frame) {
            panic!("{frame:?} read as room {room:?} id {id}");
        }
    }
    assert_eq!(frame_type(r#"{"type":"message"#), None);
    assert_eq!(frame_type(r#"{"type":"""#), Some(""));
    assert_eq!(frame_id(r#"{"type":"message","id":"1-0"#), None);
    assert_eq!(
        frame_id(r#"{"type":"m\u00e9","id":"1-0"}"#),
        Some(MessageId::new(1, 0))
    );
    assert_eq!(
        stored_room_id(r#"{"type":"publish","id":"2-3","room":"a.b:c","data":1}"#),
        Some(("a.b:c", MessageId::new(2, 3)))
    );
}
