//! Unit tests of [`super`]: backoff, the server's asked-for waits (hint, Retry-After),
//! and the resume bookkeeping of [`super::resume`] (positions, duplicates, reloads).
use std::cmp::Ordering;

use super::*;

#[test]
fn backoff_is_full_jitter_under_a_doubling_cap() {
    let (b, c) = (Duration::from_millis(500), Duration::from_secs(20));
    assert_eq!(backoff(0, b, c, 1.0), Duration::from_millis(500));
    assert_eq!(backoff(3, b, c, 1.0), Duration::from_secs(4));
    assert_eq!(backoff(10, b, c, 1.0), Duration::from_secs(20));
    assert_eq!(backoff(99, b, c, 0.5), Duration::from_secs(10));
    assert_eq!(backoff(2, b, c, 0.0), Duration::ZERO);
}

#[test]
fn a_hint_is_read_and_waited_exactly_then_the_backoff_is_back() {
    assert_eq!(
        hint(&json!({"type":"reconnect","delay_ms":250,"reason":"draining","url":"ws://x/ws"})),
        Some((Duration::from_millis(250), Some("ws://x/ws".into())))
    );
    assert_eq!(
        hint(&json!({"type":"reconnect","delay_ms":250,"reason":"draining"})),
        Some((Duration::from_millis(250), None))
    );
    assert_eq!(hint(&json!({"type":"reconnect"})), None);
    assert_eq!(hint(&json!({"type":"reconnect","delay_ms":-1})), None);
    assert_eq!(hint(&json!({"type":"pong"})), None);
    assert_eq!(
        hint(&json!({"type":"reconnect","delay_ms":u64::MAX})),
        Some((Duration::from_secs(600), None))
    );
    let o = Options::default();
    let hinted = Some(Asked::Hint(Duration::from_millis(250)));
    // Exactly the hint, whatever the draw and however many attempts came before.
    for r in [0.0, 0.3, 0.999] {
        for attempt in [0, 5, 40] {
            assert_eq!(
                next_delay(hinted, attempt, &o, r),
                Duration::from_millis(250)
            );
        }
    }
    // No hint: the jittered backoff.
    assert_eq!(next_delay(None, 0, &o, 0.5), Duration::from_millis(250));
    assert_eq!(next_delay(None, 3, &o, 0.5), Duration::from_secs(2));
    assert_eq!(next_delay(None, 30, &o, 0.999), o.cap.mul_f64(0.999));
}

#[test]
fn a_retry_after_is_waited_plus_up_to_a_second() {
    let o = Options::default();
    let asked = Some(Asked::RetryAfter(Duration::from_secs(3)));
    assert_eq!(next_delay(asked, 7, &o, 0.0), Duration::from_secs(3));
    assert_eq!(next_delay(asked, 7, &o, 0.25), Duration::from_millis(3250));
    let most = next_delay(asked, 7, &o, 0.999_999);
    assert!(
        most < Duration::from_secs(4) && most > Duration::from_millis(3999),
        "{most:?}"
    );
}

#[test]
fn a_503_says_how_long_to_wait() {
    use tokio_tungstenite::tungstenite::http::Response;
    let refused = |status: u16, retry: Option<&str>| {
        let mut b = Response::builder().status(status);
        if let Some(r) = retry {
            b = b.header("Retry-After", r);
        }
        tokio_tungstenite::tungstenite::Error::Http(Box::new(b.body(None).unwrap()))
    };
    assert_eq!(
        retry_after(&refused(503, Some("3"))),
        Some(Duration::from_secs(3))
    );
    assert_eq!(
        retry_after(&refused(503, Some("99999"))),
        Some(Duration::from_secs(300))
    );
    assert_eq!(retry_after(&refused(503, None)), None);
    assert_eq!(retry_after(&refused(503, Some("soon"))), None);
    assert_eq!(retry_after(&refused(429, Some("3"))), None);
}

#[test]
fn ids_compare_numerically_not_as_strings() {
    assert_eq!(parse_id("1767225700000-12"), Some((1_767_225_700_000, 12)));
    for bad in ["", "7", "7-", "-0", "a-1", "1-b", "1-2-3", "+1-0", " 1-0"] {
        assert_eq!(parse_id(bad), None, "{bad:?}");
    }
    assert_eq!(compare_ids("9-0", "10-0"), Some(Ordering::Less));
    assert_eq!(compare_ids("10-2", "10-10"), Some(Ordering::Less));
    assert_eq!(compare_ids("10-10", "10-10"), Some(Ordering::Equal));
    assert_eq!(compare_ids("11-0", "10-99"), Some(Ordering::Greater));
    assert_eq!(compare_ids("x", "10-0"), None);
}

#[test]
fn resume_tracks_rooms_ids_and_epochs() {
    let mut r = Resume::default();
    r.on_sent(&json!({"type":"join","room":"a"}));
    r.on_sent(&json!({"type":"join","room":"b"}));
    r.on_received(&json!({"type":"joined","room":"a","last_id":"5-0","epoch":"e1"}));
    r.on_received(&json!({"type":"joined","room":"b","last_id":null,"epoch":"e1"}));
    r.on_received(&json!({"type":"message","room":"a","id":"7-0"}));
    r.on_received(&json!({"type":"message","room":"zzz","id":"9-0"}));
    assert_eq!(
        r.rejoin_frames(),
        vec![
            json!({"type":"join","room":"a","since":"7-0","epoch":"e1"}),
            json!({"type":"join","room":"b","since":"0-0","epoch":"e1"}),
        ]
    );
    r.on_sent(&json!({"type":"leave","room":"a"}));
    assert_eq!(r.rooms().collect::<Vec<_>>(), vec!["b"]);
}

#[test]
fn live_frames_not_newer_than_the_newest_seen_are_duplicates() {
    let mut r = Resume::default();
    r.on_sent(&json!({"type":"join","room":"a"}));
    r.on_received(&json!({"type":"joined","room":"a","last_id":"5-0","epoch":"e1"}));
    let msg = |id: &str| json!({"type":"message","room":"a","id":id});
    assert_eq!(r.on_received(&msg("9-0")), Verdict::Deliver);
    // numerically: 10-0 is newer than 9-0 (as strings it is not)
    assert_eq!(r.on_received(&msg("10-0")), Verdict::Deliver);
    assert_eq!(r.on_received(&msg("9-0")), Verdict::Duplicate);
    assert_eq!(r.on_received(&msg("10-0")), Verdict::Duplicate);
    assert_eq!(r.on_received(&msg("5-0")), Verdict::Duplicate);
    let publish = json!({"type":"publish","room":"a","id":"10-0","data":1});
    assert_eq!(r.on_received(&publish), Verdict::Duplicate);
    // a duplicate never moves the position back
    assert_eq!(r.position("a"), Some((Some("10-0"), Some("e1"))));
    // frames of other rooms, without ids, or not room frames are handed on
    assert_eq!(
        r.on_received(&json!({"type":"message","room":"other","id":"1-0"})),
        Verdict::Deliver
    );
    assert_eq!(
        r.on_received(&json!({"type":"publish","room":"a","data":1})),
        Verdict::Deliver
    );
    assert_eq!(
        r.on_received(&json!({"type":"presence","room":"a"})),
        Verdict::Deliver
    );
}

#[test]
fn a_rejoin_replay_of_a_new_epoch_is_not_compared_with_the_old_one() {
    let mut r = Resume::default();
    r.on_sent(&json!({"type":"join","room":"a"}));
    r.on_received(&json!({"type":"joined","room":"a","last_id":"900-0","epoch":"e1"}));
    assert_eq!(
        r.rejoin(),
        vec![json!({"type":"join","room":"a","since":"900-0","epoch":"e1"})]
    );
    // the broker restarted: its ids start lower, in epoch e2
    let replayed = json!({"type":"message","room":"a","id":"3-0"});
    assert_eq!(r.on_received(&replayed), Verdict::Deliver);
    r.on_received(
        &json!({"type":"joined","room":"a","last_id":"4-0","epoch":"e2","recovered":false}),
    );
    assert_eq!(r.position("a"), Some((Some("4-0"), Some("e2"))));
    assert_eq!(
        r.on_received(&json!({"type":"message","room":"a","id":"4-0"})),
        Verdict::Duplicate
    );
    assert_eq!(
        r.on_received(&json!({"type":"message","room":"a","id":"5-0"})),
        Verdict::Deliver
    );
}

#[test]
fn a_resync_moves_the_resume_point_and_drops_what_the_reload_covers() {
    let mut r = Resume::default();
    r.on_sent(&json!({"type":"join","room":"a"}));
    r.on_received(&json!({"type":"joined","room":"a","last_id":"5-0","epoch":"e1"}));
    r.on_received(&json!({"type":"message","room":"a","id":"7-0"}));
    r.on_received(&json!({"type":"resync","room":"a","epoch":"e2","last_id":"3-0"}));
    assert_eq!(
        r.rejoin_frames(),
        vec![json!({"type":"join","room":"a","since":"3-0","epoch":"e2"})]
    );
    // live: up to last_id is the reload's, after it is new
    let msg = |id: &str| json!({"type":"message","room":"a","id":id});
    assert_eq!(r.on_received(&msg("3-0")), Verdict::Duplicate);
    assert_eq!(r.on_received(&msg("2-5")), Verdict::Duplicate);
    assert_eq!(r.on_received(&msg("3-1")), Verdict::Deliver);
    // the reload keeps what is up to last_id: 3-1 came live, not again in the reload
    let mut answer = json!({"type":"history","ref":"resync:a","room":"a","messages":[
        {"id":"1-0"},{"id":"2-5"},{"id":"3-0"},{"id":"3-1"}], "more": false});
    assert!(r.reloaded(&mut answer));
    let ids: Vec<_> = answer["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, [json!("1-0"), json!("2-5"), json!("3-0")]);
    // only once, and only the answer to the reload
    let mut again = answer.clone();
    assert!(!r.reloaded(&mut again));
    let mut other = json!({"type":"history","ref":"r7","room":"a","messages":[{"id":"3-1"}]});
    assert!(!r.reloaded(&mut other));
    assert_eq!(other["messages"].as_array().unwrap().len(), 1);

    // an empty history: the reload holds nothing, the position is the start
    r.on_received(&json!({"type":"resync","room":"a","epoch":"e3","last_id":null}));
    assert_eq!(r.rejoin_frames()[0]["since"], "0-0");
    assert_eq!(r.rejoin_frames()[0]["epoch"], "e3");
    let mut empty = json!({"type":"history","ref":"resync:a","room":"a","messages":[{"id":"1-0"}]});
    assert!(r.reloaded(&mut empty));
    assert_eq!(empty["messages"], json!([]));
    assert_eq!(
        Resume::reload_frame("a", RELOAD_LIMIT),
        json!({"type":"history","room":"a","limit":100,"ref":"resync:a"})
    );
}

#[test]
fn a_resync_in_the_same_epoch_keeps_a_newer_id_seen_and_a_reconnect_forgets_the_reload() {
    let mut r = Resume::default();
    r.on_sent(&json!({"type":"join","room":"a"}));
    r.on_received(&json!({"type":"joined","room":"a","last_id":"5-0","epoch":"e1"}));
    r.on_received(&json!({"type":"message","room":"a","id":"8-0"}));
    r.on_received(&json!({"type":"resync","room":"a","epoch":"e1","last_id":"6-0"}));
    assert_eq!(r.position("a"), Some((Some("8-0"), Some("e1"))));
    assert_eq!(
        r.on_received(&json!({"type":"message","room":"a","id":"7-0"})),
        Verdict::Duplicate
    );
    // the connection dropped before the reload answered: that answer will not come
    r.rejoin();
    let mut late = json!({"type":"history","ref":"resync:a","room":"a","messages":[{"id":"9-0"}]});
    assert!(!r.reloaded(&mut late));
}
