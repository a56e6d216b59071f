//! Unit tests of [`super`].
use super::*;
use serde_json::json;

#[test]
fn stored_entry_becomes_the_message_frame() {
    let from = Member {
        user_id: "u\"1".into(),
        username: "Ann".into(),
    };
    let entry = StoredEntry::message("lobby", &from, "hi \"there\"", "2026-01-01T00:00:00.000Z");
    let frame = entry.frame(MessageId::new(17, 3));
    let v: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(
        v,
        json!({"type":"message","id":"17-3","room":"lobby","user_id":"u\"1","username":"Ann",
               "content":"hi \"there\"","ts":"2026-01-01T00:00:00.000Z"})
    );
    assert_eq!(frame_type(&frame), Some("message"));
    assert_eq!(frame_id(&frame), Some(MessageId::new(17, 3)));
    assert_eq!(
        stored_room_id(&frame),
        Some(("lobby", MessageId::new(17, 3)))
    );
    assert_eq!(
        stored_room_id(r#"{"type":"direct","id":"1-0","room":"x"}"#),
        None
    );
    let (room, id) = stored_at(&frame).unwrap();
    assert_eq!((&frame[room], id), ("lobby", MessageId::new(17, 3)));
    assert_eq!(stored_at(r#"{"type":"presence","room":"x"}"#), None);
    // And it decodes as the typed frame a client uses.
    assert!(matches!(
        serde_json::from_str::<ServerFrame>(&frame).unwrap(),
        ServerFrame::Message { .. }
    ));
}

#[test]
fn publish_entry() {
    let entry = StoredEntry::publish("r", &json!({"a":[1,2]}), "t");
    let v: Value = serde_json::from_str(&entry.frame(MessageId::new(1, 0))).unwrap();
    assert_eq!(
        v,
        json!({"type":"publish","id":"1-0","room":"r","data":{"a":[1,2]},"ts":"t"})
    );
}

#[test]
fn history_frame_is_what_serde_encodes() {
    let a = StoredEntry::message(
        "r\"x",
        &Member {
            user_id: "u".into(),
            username: "U".into(),
        },
        "hi",
        "t",
    )
    .frame(MessageId::new(1, 2));
    let b = StoredEntry::publish("r\"x", &json!({"k":[1]}), "t").frame(MessageId::new(3, 0));
    for (reference, more) in [
        (None, false),
        (Some(json!("q")), true),
        (Some(json!(7)), false),
    ] {
        let by_hand = history_frame(
            reference.as_ref(),
            "r\"x",
            [a.as_str(), r#"{"type":"typing"}"#, b.as_str()],
            more,
        );
        let typed = ServerFrame::History {
            reference: reference.clone(),
            room: "r\"x".into(),
            messages: vec![
                RawValue::from_string(a.clone()).unwrap(),
                RawValue::from_string(b.clone()).unwrap(),
            ],
            more,
        }
        .encode();
        assert_eq!(by_hand, typed);
    }
    assert_eq!(
        history_frame(None, "r", [], false),
        r#"{"type":"history","room":"r","messages":[],"more":false}"#
    );
}

#[test]
fn type_comes_first() {
    let f = ServerFrame::Pong {
        reference: Some(json!(1)),
    }
    .encode();
    assert_eq!(f, r#"{"type":"pong","ref":1}"#);
    assert_eq!(frame_type(&f), Some("pong"));
    assert_eq!(frame_id(&f), None);
    let e = ServerFrame::Error {
        code: ErrorCode::NotMember,
        message: "m".into(),
        reference: None,
    }
    .encode();
    assert_eq!(e, r#"{"type":"error","code":"not_member","message":"m"}"#);
}

#[test]
fn resync_and_reconnect_frames() {
    let f = ServerFrame::Resync {
        room: "r".into(),
        epoch: "e1".into(),
        last_id: Some("5-0".into()),
    };
    assert_eq!(
        serde_json::from_str::<Value>(&f.encode()).unwrap(),
        json!({"type":"resync","room":"r","epoch":"e1","last_id":"5-0"})
    );
    let empty = ServerFrame::Resync {
        room: "r".into(),
        epoch: "e2".into(),
        last_id: None,
    };
    assert!(empty.encode().contains(r#""last_id":null"#));
    let hint = ServerFrame::Reconnect {
        delay_ms: 1200,
        url: None,
        reason: "draining".into(),
    };
    assert_eq!(
        hint.encode(),
        r#"{"type":"reconnect","delay_ms":1200,"reason":"draining"}"#
    );
    let with_url = ServerFrame::Reconnect {
        delay_ms: 0,
        url: Some("wss://example.com/ws".into()),
        reason: "draining".into(),
    };
    assert!(matches!(
        serde_json::from_str::<ServerFrame>(&with_url.encode()).unwrap(),
        ServerFrame::Reconnect { url: Some(_), .. }
    ));
}

#[test]
fn refresh_frames_encode_with_their_type_first() {
    let needed = ServerFrame::RefreshNeeded { exp: 1_767_225_600 }.encode();
    assert_eq!(needed, r#"{"type":"refresh_needed","exp":1767225600}"#);
    assert_eq!(frame_type(&needed), Some("refresh_needed"));
    let refreshed = ServerFrame::Refreshed {
        reference: Some(json!("r1")),
        exp: 1_767_229_200,
    }
    .encode();
    assert_eq!(
        refreshed,
        r#"{"type":"refreshed","ref":"r1","exp":1767229200}"#
    );
    let plain = ServerFrame::Refreshed {
        reference: None,
        exp: 5,
    };
    assert_eq!(plain.encode(), r#"{"type":"refreshed","exp":5}"#);
    // A client reads them back as the typed frames.
    assert!(matches!(
        serde_json::from_str::<ServerFrame>(&refreshed).unwrap(),
        ServerFrame::Refreshed {
            exp: 1_767_229_200,
            reference: Some(_)
        }
    ));
    // A room taken away by a refresh says why; an answer to `leave` does not.
    let revoked = ServerFrame::Left {
        reference: None,
        room: "private:ops".into(),
        reason: Some("revoked".into()),
    };
    assert_eq!(
        revoked.encode(),
        r#"{"type":"left","room":"private:ops","reason":"revoked"}"#
    );
    let answer = ServerFrame::Left {
        reference: Some(json!(3)),
        room: "a".into(),
        reason: None,
    };
    assert_eq!(answer.encode(), r#"{"type":"left","ref":3,"room":"a"}"#);
}
