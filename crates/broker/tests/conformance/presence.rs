//! [`wsgate_broker::Presence`]: sessions counted per user, typing with expiry.

use std::time::Duration;

use wsgate_broker::{Added, CountDue, MembersPage, PresenceChange, SessionRef, TYPING_MAX};

use crate::{member, Factory, Made};

fn session(id: &str, user: &str) -> SessionRef {
    SessionRef {
        session_id: id.into(),
        user: member(user),
    }
}

/// The change of an add that got in.
fn added(a: Added) -> (PresenceChange, MembersPage) {
    match a {
        Added::In(c, p) => (c, p),
        Added::Full => panic!("the room was full"),
    }
}

async fn presence_counts_sessions(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.presence;
    let (s1, s2, s3) = (session("s1", "u"), session("s2", "u"), session("s3", "v"));
    let change = |edge, count| PresenceChange {
        edge,
        count,
        over: false,
    };
    assert_eq!(added(b.add("p", &s1, 0).await.unwrap()).0, change(true, 1));
    assert_eq!(added(b.add("p", &s2, 0).await.unwrap()).0, change(false, 1));
    let (c, page) = added(b.add("p", &s3, 10).await.unwrap());
    assert_eq!(c, change(true, 2));
    assert_eq!(page.members, vec![member("u"), member("v")]);
    assert_eq!(b.count("p").await.unwrap(), (2, false));
    assert_eq!(
        b.members("p", None, 10).await.unwrap(),
        MembersPage {
            members: vec![member("u"), member("v")],
            next_cursor: None
        }
    );
    assert_eq!(b.remove("p", &s1).await.unwrap(), change(false, 2));
    assert_eq!(b.remove("p", &s2).await.unwrap(), change(true, 1));
    assert_eq!(
        b.remove("p", &s2).await.unwrap(),
        change(false, 1),
        "removing twice is not a second leave"
    );
    assert_eq!(
        b.members("p", None, 10).await.unwrap().members,
        vec![member("v")]
    );
    assert_eq!(b.remove("p", &s3).await.unwrap(), change(true, 0));
    assert_eq!(b.count("p").await.unwrap(), (0, false));
    assert_eq!(
        b.members("p", None, 10).await.unwrap(),
        MembersPage::default()
    );
}

async fn members_pages_list_each_user_once(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.presence;
    // 300 users (a Redis hash past its compact encoding), a few with two sessions.
    for i in 0..300 {
        b.add("big", &session(&format!("s{i}"), &format!("u{i:03}")), 0)
            .await
            .unwrap();
    }
    for i in 0..20 {
        b.add("big", &session(&format!("t{i}"), &format!("u{i:03}")), 0)
            .await
            .unwrap();
    }
    assert_eq!(b.count("big").await.unwrap().0, 300);
    for limit in [1, 7, 100, 1000] {
        let mut seen = std::collections::BTreeSet::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = b.members("big", cursor.as_deref(), limit).await.unwrap();
            assert!(
                page.members.len() <= limit,
                "a page holds at most its limit"
            );
            let ids: std::collections::BTreeSet<_> =
                page.members.iter().map(|m| m.user_id.clone()).collect();
            assert_eq!(ids.len(), page.members.len(), "a user once per page");
            for m in page.members {
                assert_eq!(m.username, m.user_id.to_uppercase());
                assert!(
                    seen.insert(m.user_id),
                    "a user on two pages of a still room"
                );
            }
            pages += 1;
            assert!(pages <= 400, "paging ends");
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 300, "limit {limit}: every user listed");
    }
    // The first page of an add is bounded by what it asks for.
    let (c, page) = added(b.add("big", &session("x", "newcomer"), 5).await.unwrap());
    assert_eq!(c.count, 301);
    assert!(!page.members.is_empty() && page.members.len() <= 5);
    // A cursor this backend never made is refused, not a panic.
    for bad in ["zz", "x.y", "-1.0", "00"] {
        let r = b.members("big", Some(bad), 10).await;
        assert!(
            matches!(r, Err(wsgate_broker::Error::Invalid(_))) || r.is_ok(),
            "{bad}: {r:?}"
        );
    }
    assert!(matches!(
        b.members("big", Some("not a cursor"), 10).await,
        Err(wsgate_broker::Error::Invalid(_))
    ));
}

async fn a_full_room_refuses_new_users_only(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.presence;
    // `cap:*` rooms take 3 distinct users.
    for u in ["a", "b", "c"] {
        added(b.add("cap:r", &session(u, u), 0).await.unwrap());
    }
    assert_eq!(
        b.add("cap:r", &session("d", "d"), 0).await.unwrap(),
        Added::Full
    );
    assert_eq!(b.count("cap:r").await.unwrap().0, 3, "nothing was added");
    // A second session of a member is not a new user.
    let (c, _) = added(b.add("cap:r", &session("a2", "a"), 0).await.unwrap());
    assert_eq!((c.edge, c.count), (false, 3));
    b.remove("cap:r", &session("b", "b")).await.unwrap();
    let (c, _) = added(b.add("cap:r", &session("d", "d"), 0).await.unwrap());
    assert_eq!((c.edge, c.count), (true, 3));
}

async fn over_presence_max_members_with_hysteresis(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.presence;
    // `pm:*` rooms list members up to 4; back below at 3 (nine tenths, rounded down).
    let mut over = Vec::new();
    for i in 0..6 {
        let (c, _) = added(
            b.add("pm:r", &session(&format!("s{i}"), &format!("u{i}")), 0)
                .await
                .unwrap(),
        );
        over.push(c.over);
    }
    assert_eq!(over, [false, false, false, false, true, true]);
    let mut after = Vec::new();
    for i in 0..4 {
        let c = b
            .remove("pm:r", &session(&format!("s{i}"), &format!("u{i}")))
            .await
            .unwrap();
        after.push((c.count, c.over));
    }
    assert_eq!(after, [(5, true), (4, true), (3, false), (2, false)]);
    let (c, _) = added(b.add("pm:r", &session("s9", "u9"), 0).await.unwrap());
    assert_eq!(
        (c.count, c.over),
        (3, false),
        "back in full mode until past 4 again"
    );
    let (c, page) = added(b.add("pm:r", &session("s8", "u8"), 10).await.unwrap());
    assert_eq!(
        (c.count, c.over, page.members.len()),
        (4, false, 4),
        "listed at the limit"
    );
    let (c, page) = added(b.add("pm:r", &session("s7", "u7"), 10).await.unwrap());
    assert_eq!((c.count, c.over), (5, true));
    assert!(
        page.members.is_empty(),
        "a room over its limit lists no members"
    );
    assert_eq!(b.count("pm:r").await.unwrap(), (5, true));
}

async fn count_slot_publishes_each_change_once_per_period(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.presence;
    let period = Duration::from_millis(300);
    added(b.add("c", &session("s1", "u1"), 0).await.unwrap());
    assert_eq!(
        b.count_due("c", period).await.unwrap(),
        CountDue::Publish(1)
    );
    added(b.add("c", &session("s2", "u2"), 0).await.unwrap());
    let later = b.count_due("c", period).await.unwrap();
    let CountDue::Later(wait) = later else {
        panic!("the slot is held: {later:?}");
    };
    assert!(wait <= period, "{wait:?}");
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(
        b.count_due("c", period).await.unwrap(),
        CountDue::Publish(2)
    );
    tokio::time::sleep(period + Duration::from_millis(20)).await;
    assert_eq!(
        b.count_due("c", period).await.unwrap(),
        CountDue::Unchanged,
        "the count published last"
    );
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
    members_pages_list_each_user_once,
    a_full_room_refuses_new_users_only,
    over_presence_max_members_with_hysteresis,
    count_slot_publishes_each_change_once_per_period,
    typing_expires,
    typing_lists_at_most_typing_max_users
);
