//! Unit tests of [`super`].
use super::*;
use serde_json::json;

const LIMITS: ParseLimits = ParseLimits {
    max_content_bytes: 10,
};

fn ok(v: Value) -> ClientFrame {
    parse(&v.to_string(), &LIMITS).unwrap()
}

fn err(text: &str) -> FrameError {
    parse(text, &LIMITS).unwrap_err()
}

#[test]
fn every_command_parses() {
    assert_eq!(
        ok(json!({"type":"join","room":"a","since":"5-1","epoch":"e1","ref":7})),
        ClientFrame {
            reference: Some(json!(7)),
            command: Command::Join {
                room: "a".into(),
                since: Some(MessageId::new(5, 1)),
                epoch: Some("e1".into())
            }
        }
    );
    assert_eq!(
        ok(json!({"type":"leave","room":"a"})).command,
        Command::Leave { room: "a".into() }
    );
    assert_eq!(
        ok(json!({"type":"message","room":"a","content":"hi"})).command,
        Command::Message {
            room: "a".into(),
            content: "hi".into()
        }
    );
    assert_eq!(
        ok(json!({"type":"typing","room":"a","is_typing":false})).command,
        Command::Typing {
            room: "a".into(),
            is_typing: false
        }
    );
    assert_eq!(
        ok(json!({"type":"direct","to":"bob","content":"yo","ref":"x"})),
        ClientFrame {
            reference: Some(json!("x")),
            command: Command::Direct {
                to: "bob".into(),
                content: "yo".into()
            }
        }
    );
    assert_eq!(
        ok(json!({"type":"history","room":"a"})).command,
        Command::History {
            room: "a".into(),
            before: None,
            limit: 50
        }
    );
    assert_eq!(
        ok(json!({"type":"history","room":"a","before":"9-0","limit":100})).command,
        Command::History {
            room: "a".into(),
            before: Some(MessageId::new(9, 0)),
            limit: 100
        }
    );
    assert_eq!(ok(json!({"type":"ping"})).command, Command::Ping);
    assert_eq!(
        ok(json!({"type":"notifications","unread_only":true,"limit":5})).command,
        Command::Notifications {
            limit: 5,
            before: None,
            unread_only: true
        }
    );
    assert_eq!(
        ok(json!({"type":"mark_read","ids":["a-1","b"]})).command,
        Command::MarkRead {
            ids: Some(vec!["a-1".into(), "b".into()])
        }
    );
    assert_eq!(
        ok(json!({"type":"mark_read","all":true})).command,
        Command::MarkRead { ids: None }
    );
    for bad in [
        json!({"type":"mark_read"}),
        json!({"type":"mark_read","ids":[]}),
        json!({"type":"mark_read","ids":[5]}),
        json!({"type":"mark_read","ids":["x"],"all":true}),
        json!({"type":"mark_read","all":"yes"}),
        json!({"type":"notifications","limit":0}),
        json!({"type":"notifications","before":"a b"}),
        json!({"type":"notifications","unread_only":1}),
    ] {
        assert_eq!(
            parse(&bad.to_string(), &LIMITS).unwrap_err().code,
            ErrorCode::InvalidField,
            "{bad}"
        );
    }
}

#[test]
fn bad_json() {
    for text in [
        "",
        "{",
        "nope",
        "[1]",
        "\"s\"",
        "3",
        "null",
        &"[".repeat(10_000),
    ] {
        assert_eq!(err(text).code, ErrorCode::BadJson, "{text:.20}");
    }
}

#[test]
fn unknown_type() {
    for text in [r#"{}"#, r#"{"type":5}"#, r#"{"type":"nope","ref":1}"#] {
        assert_eq!(err(text).code, ErrorCode::UnknownType, "{text}");
    }
    assert_eq!(err(r#"{"type":"nope","ref":1}"#).reference, Some(json!(1)));
}

#[test]
fn invalid_fields_carry_the_ref() {
    let cases = [
        json!({"type":"join"}),
        json!({"type":"join","room":""}),
        json!({"type":"join","room":5}),
        json!({"type":"join","room":"a b"}),
        json!({"type":"join","room":"a".repeat(129)}),
        json!({"type":"join","room":"a","since":"x"}),
        json!({"type":"join","room":"a","since":5}),
        json!({"type":"join","room":"a","epoch":"bad epoch"}),
        json!({"type":"join","room":"a","epoch":""}),
        json!({"type":"message","room":"a"}),
        json!({"type":"message","room":"a","content":""}),
        json!({"type":"message","room":"a","content":"12345678901"}),
        json!({"type":"message","room":"a","content":["x"]}),
        json!({"type":"typing","room":"a"}),
        json!({"type":"typing","room":"a","is_typing":"yes"}),
        json!({"type":"direct","content":"x"}),
        json!({"type":"direct","to":"","content":"x"}),
        json!({"type":"history","room":"a","limit":0}),
        json!({"type":"history","room":"a","limit":101}),
        json!({"type":"history","room":"a","limit":1.5}),
        json!({"type":"history","room":"a","before":"zz"}),
    ];
    for mut case in cases {
        case["ref"] = json!("r");
        let e = parse(&case.to_string(), &LIMITS).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField, "{case}");
        assert_eq!(e.reference, Some(json!("r")), "{case}");
    }
    assert_eq!(
        err(r#"{"type":"ping","ref":{}}"#).code,
        ErrorCode::InvalidField
    );
}

#[test]
fn content_limit_counts_utf8_bytes() {
    // 5 two-byte characters = 10 bytes: allowed; 6 = 12 bytes: refused.
    assert!(parse(
        &json!({"type":"message","room":"a","content":"ééééé"}).to_string(),
        &LIMITS
    )
    .is_ok());
    assert!(parse(
        &json!({"type":"message","room":"a","content":"éééééé"}).to_string(),
        &LIMITS
    )
    .is_err());
}

#[test]
fn refresh_carries_one_bounded_token() {
    // The token is opaque to the parser (the gateway verifies it), and not held to the
    // content limit: a token is longer than the 10 bytes of these tests' messages.
    let long = "t".repeat(MAX_TOKEN_BYTES);
    assert_eq!(
        ok(json!({"type":"refresh","token":long,"ref":"r1"})),
        ClientFrame {
            reference: Some(json!("r1")),
            command: Command::Refresh { token: long }
        }
    );
    assert_eq!(
        ok(json!({"type":"refresh","token":"a.b.c"})).command.kind(),
        "refresh"
    );
    for bad in [
        json!({"type":"refresh","ref":7}),
        json!({"type":"refresh","token":"","ref":7}),
        json!({"type":"refresh","token":5,"ref":7}),
        json!({"type":"refresh","token":["a.b.c"],"ref":7}),
        json!({"type":"refresh","token":"t".repeat(MAX_TOKEN_BYTES + 1),"ref":7}),
    ] {
        let e = parse(&bad.to_string(), &LIMITS).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField, "{bad:.60}");
        assert_eq!(e.reference, Some(json!(7)), "{bad:.60}");
    }
}
