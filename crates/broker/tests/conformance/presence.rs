//! [`wsgate_broker::Presence`]: sessions counted per user, typing with expiry.

use std::time::Duration;

use wsgate_broker::{SessionRef, TYPING_MAX};

use crate::{member, Factory, Made};

async fn presence_counts_sessions(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.presence;
    let s1 = SessionRef {
        session_id: "s1".into(),
        user: member("u"),
    };
    let s2 = SessionRef {
        session_id: "s2".into(),
        user: member("u"),
    };
    let s3 = SessionRef {
        session_id: "s3".into(),
        user: member("v"),
    };
    assert!(b.add("p", &s1).await.unwrap());
    assert!(!b.add("p", &s2).await.unwrap());
    assert!(b.add("p", &s3).await.unwrap());
    assert_eq!(
        b.members("p").await.unwrap(),
        vec![member("u"), member("v")]
    );
    assert!(!b.remove("p", &s1).await.unwrap());
    assert!(b.remove("p", &s2).await.unwrap());
    assert!(
        !b.remove("p", &s2).await.unwrap(),
        "removing twice is not a second leave"
    );
    assert_eq!(b.members("p").await.unwrap(), vec![member("v")]);
}

async fn typing_expires(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.presence;
    let ttl = Duration::from_millis(200);
    assert_eq!(
        b.typing_set("t", &member("u"), true, ttl).await.unwrap(),
        vec![member("u")]
    );
    assert_eq!(
        b.typing_set("t", &member("v"), true, Duration::from_secs(60))
            .await
            .unwrap(),
        vec![member("u"), member("v")]
    );
    assert_eq!(b.typing_expire("t").await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.typing_expire("t").await.unwrap(), Some(vec![member("v")]));
    assert_eq!(
        b.typing_set("t", &member("v"), false, ttl).await.unwrap(),
        vec![]
    );
}

async fn typing_lists_at_most_typing_max_users(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.presence;
    let ttl = Duration::from_secs(60);
    let mut last = Vec::new();
    for i in 0..TYPING_MAX + 5 {
        last = b
            .typing_set("t", &member(&format!("u{i:02}")), true, ttl)
            .await
            .unwrap();
    }
    assert_eq!(last.len(), TYPING_MAX, "the list stops growing at the cap");
    // One who is listed stops: room for another.
    let listed = last[0].clone();
    let now = b.typing_set("t", &listed, false, ttl).await.unwrap();
    assert_eq!(now.len(), TYPING_MAX - 1);
    let now = b.typing_set("t", &member("late"), true, ttl).await.unwrap();
    assert_eq!(now.len(), TYPING_MAX);
    assert!(now.contains(&member("late")));
}

crate::suite!(
    presence_counts_sessions,
    typing_expires,
    typing_lists_at_most_typing_max_users
);
