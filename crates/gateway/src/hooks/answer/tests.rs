use super::*;

fn refused(message: &str) -> Refusal {
    Refusal {
        unauthorized: false,
        message: message.into(),
    }
}

#[test]
fn connect_answers() {
    assert_eq!(
        connect(br#"{"allow":true}"#, false),
        Ok(Answer::Allow(ConnectGrant::default()))
    );
    assert_eq!(
        connect(
            br#"{"allow":true,"user_id":"u-1","username":"","rooms":["private:a","private:team-*"]}"#,
            true
        ),
        Ok(Answer::Allow(ConnectGrant {
            user_id: Some("u-1".into()),
            username: None,
            rooms: Some(vec!["private:a".into(), "private:team-*".into()]),
        }))
    );
    assert_eq!(
        connect(
            br#"{"allow":false,"code":"unauthorized","message":"log in"}"#,
            true
        ),
        Ok(Answer::Refuse(Refusal {
            unauthorized: true,
            message: "log in".into()
        }))
    );
    assert_eq!(
        connect(br#"{"allow":false}"#, true),
        Ok(Answer::Refuse(refused("refused by the back end")))
    );
    for (bad, need_user, why) in [
        (&br#"{"allow":true}"#[..], true, "user_id is required"),
        (br#"{"allow":true,"user_id":""}"#, false, "user_id must be"),
        (
            br#"{"allow":true,"user_id":"a\nb"}"#,
            false,
            "user_id must be",
        ),
        (
            br#"{"allow":true,"username":"x\u0007"}"#,
            false,
            "username must be",
        ),
        (br#"{"allow":true,"rooms":["*"]}"#, false, "not a room name"),
        (
            br#"{"allow":true,"rooms":["a b"]}"#,
            false,
            "not a room name",
        ),
        (
            br#"{"allow":true,"rooms":"private:a"}"#,
            false,
            "invalid type",
        ),
        (br#"{"allow":true,"message":"hi"}"#, false, "go with"),
        (
            br#"{"allow":false,"user_id":"u"}"#,
            false,
            "carries no user_id",
        ),
        (
            br#"{"allow":false,"code":"banned"}"#,
            false,
            "\"forbidden\" or",
        ),
        (br#"{"allow":true,"room":["x"]}"#, false, "unknown field"),
        (br#"{"allow":true,"allow":true}"#, false, "duplicate field"),
        (br#"{"allow":"yes"}"#, false, "invalid type"),
        (br#"{}"#, false, "missing field"),
        (br#"[true]"#, false, "not a valid answer"),
        (b"", false, "not a valid answer"),
    ] {
        let err = connect(bad, need_user).unwrap_err();
        assert!(err.contains(why), "{}: {err}", String::from_utf8_lossy(bad));
    }
    let many = format!(
        r#"{{"allow":true,"rooms":{:?}}}"#,
        vec!["r"; MAX_GRANTS + 1]
    );
    assert!(connect(many.as_bytes(), false).is_err());
}

#[test]
fn join_answers() {
    assert_eq!(join(br#"{"allow":true}"#), Ok(Answer::Allow(())));
    assert_eq!(
        join(br#"{"allow":false,"code":"forbidden","message":"members only"}"#),
        Ok(Answer::Refuse(refused("members only")))
    );
    assert!(join(br#"{"allow":false,"code":"unauthorized"}"#).is_err());
    assert!(join(br#"{"allow":true,"content":"x"}"#).is_err());
    assert!(join(br#"{"allow":true,"user_id":"x"}"#).is_err());
}

#[test]
fn publish_answers() {
    assert_eq!(publish(br#"{"allow":true}"#, 10), Ok(Answer::Allow(None)));
    assert_eq!(
        publish(br#"{"allow":true,"content":"***"}"#, 10),
        Ok(Answer::Allow(Some("***".into())))
    );
    assert_eq!(
        publish(br#"{"allow":false,"message":"no links"}"#, 10),
        Ok(Answer::Refuse(refused("no links")))
    );
    assert!(publish(br#"{"allow":true,"content":""}"#, 10).is_err());
    assert!(publish(br#"{"allow":true,"content":"01234567890"}"#, 10)
        .unwrap_err()
        .contains("longer than 10"));
    assert!(publish(br#"{"allow":true,"content":7}"#, 10).is_err());
    assert!(publish(br#"{"allow":false,"content":"x"}"#, 10).is_err());
    assert!(publish(br#"{"allow":true,"contnet":"x"}"#, 10).is_err());
}

#[test]
fn messages_are_sanitized_and_bounded() {
    assert_eq!(sanitize("  spam\r\ndetected\t "), "spam  detected");
    assert_eq!(sanitize("a\u{202E}b\u{200B}c\u{FEFF}"), "a b c");
    assert_eq!(sanitize(" \u{0}\u{1b} "), "refused by the back end");
    let long = "é".repeat(150);
    let cut = sanitize(&long);
    assert!(cut.len() <= MAX_MESSAGE_BYTES && cut.len() >= MAX_MESSAGE_BYTES - 1);
    assert!(cut.chars().all(|c| c == 'é'));
}
