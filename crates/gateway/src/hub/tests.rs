//! Unit tests of [`super`].
use super::*;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::handle::Control;
use crate::queue::Queue;

/// The consumer side of a session's queue, as the tests read it.
struct Rx(Arc<Queue>);

impl Rx {
    fn try_recv(&mut self) -> Result<Outbound, ()> {
        self.0.try_pop().ok_or(())
    }
}

fn hub() -> Hub {
    Hub::new(PendingCap {
        frames: 4,
        bytes: 1 << 20,
    })
}

fn state() -> RoomState {
    RoomState {
        epoch: "e1".into(),
        last_id: None,
    }
}

fn cap(frames: usize) -> PendingCap {
    PendingCap {
        frames,
        bytes: 1 << 20,
    }
}

fn session(id: u64, cap: usize) -> (SessionHandle, Rx) {
    let queue = Queue::new(cap, 1 << 20);
    let control = Arc::new(Control::new(CancellationToken::new()));
    (
        SessionHandle {
            id,
            key: Arc::from(format!("s{id}")),
            queue: queue.clone(),
            control,
            presence: None,
        },
        Rx(queue),
    )
}

fn text(o: Outbound) -> Vec<String> {
    match o {
        Outbound::Frame(f) | Outbound::Stored(f, _) => vec![f.to_string()],
        Outbound::Batch(fs) => fs.into_iter().map(|f| f.to_string()).collect(),
        Outbound::Binary(_) => panic!("the hub never queues binary frames"),
    }
}

fn msg(id: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(r#"{{"type":"message","id":"{id}","room":"r"}}"#))
}

#[test]
fn fanout_hands_the_same_bytes_to_live_members_only_of_that_room() {
    let hub = hub();
    let (a, mut ra) = session(1, 8);
    let (b, mut rb) = session(2, 8);
    let (c, mut rc) = session(3, 8);
    assert!(hub.join("r", &a, cap(8)));
    assert!(!hub.join("r", &b, cap(8)));
    hub.join("other", &c, cap(8));
    hub.finish_join("r", 1, vec![], None, &state()).unwrap();
    hub.finish_join("r", 2, vec![], None, &state()).unwrap();
    hub.finish_join("other", 3, vec![], None, &state()).unwrap();
    for r in [&mut ra, &mut rb, &mut rc] {
        assert_eq!(text(r.try_recv().unwrap()), Vec::<String>::new());
    }
    let f = msg("1-0");
    assert_eq!(
        hub.dispatch(&Channel::Room("r".into()), &f),
        Fanout {
            delivered: 2,
            slow: 0
        }
    );
    match (ra.try_recv().unwrap(), rb.try_recv().unwrap()) {
        (
            Outbound::Frame(x) | Outbound::Stored(x, _),
            Outbound::Frame(y) | Outbound::Stored(y, _),
        ) => {
            assert_eq!(
                x.as_str().as_ptr(),
                y.as_str().as_ptr(),
                "one allocation for all"
            )
        }
        _ => panic!("expected frames"),
    }
    assert!(rc.try_recv().is_err());
}

#[test]
fn pending_join_follows_replay_without_duplicates() {
    let hub = hub();
    let (a, mut ra) = session(1, 8);
    hub.join("r", &a, cap(8));
    // Live frames arrive while the replay is read: 5-0 is also in the replay.
    hub.dispatch(&Channel::Room("r".into()), &msg("5-0"));
    hub.dispatch(
        &Channel::Room("r".into()),
        &Utf8Bytes::from(r#"{"type":"presence","room":"r"}"#),
    );
    hub.dispatch(&Channel::Room("r".into()), &msg("6-0"));
    assert!(ra.try_recv().is_err(), "nothing goes out before joined");
    let head = vec![
        msg("4-0"),
        msg("5-0"),
        Utf8Bytes::from(r#"{"type":"joined"}"#),
    ];
    hub.finish_join("r", 1, head, Some(MessageId::new(5, 0)), &state())
        .unwrap();
    let got = text(ra.try_recv().unwrap());
    let ids: Vec<_> = got
        .iter()
        .map(|f| frame_id(f).map(|i| i.to_string()))
        .collect();
    assert_eq!(
        ids,
        vec![
            Some("4-0".into()),
            Some("5-0".into()),
            None,
            None,
            Some("6-0".into())
        ]
    );
    assert!(got[2].contains("joined") && got[3].contains("presence"));
    // A frame published before the replay was read but dispatched only now is
    // not delivered twice.
    hub.dispatch(&Channel::Room("r".into()), &msg("5-0"));
    assert!(ra.try_recv().is_err(), "5-0 was in the replay");
    // Now live.
    hub.dispatch(&Channel::Room("r".into()), &msg("7-0"));
    assert_eq!(text(ra.try_recv().unwrap()), vec![msg("7-0").to_string()]);
}

#[test]
fn a_full_queue_closes_only_that_session() {
    let hub = hub();
    let (slow, _rs) = session(1, 2);
    let (fast, mut rf) = session(2, 64);
    for h in [&slow, &fast] {
        hub.join("r", h, cap(64));
        hub.finish_join("r", h.id, vec![], None, &state()).unwrap();
    }
    let mut slow_closes = 0;
    for i in 0..10 {
        slow_closes += hub
            .dispatch(&Channel::Room("r".into()), &msg(&format!("{i}-0")))
            .slow;
    }
    assert!(slow.control.token.is_cancelled());
    assert_eq!(slow.control.code(), Some(1013));
    assert!(slow_closes >= 1);
    assert!(!fast.control.token.is_cancelled());
    let mut n = 0;
    while let Ok(o) = rf.try_recv() {
        n += text(o).len();
    }
    assert_eq!(n, 10);
}

#[test]
fn users_and_broadcast() {
    let hub = hub();
    let (a1, mut r1) = session(1, 8);
    let (a2, mut r2) = session(2, 8);
    let (b, mut rb) = session(3, 8);
    assert!(hub.register("alice", &a1));
    assert!(!hub.register("alice", &a2));
    assert!(hub.register("bob", &b));
    let f = Utf8Bytes::from(r#"{"type":"direct"}"#);
    assert_eq!(
        hub.dispatch(&Channel::User("alice".into()), &f).delivered,
        2
    );
    assert_eq!(hub.dispatch(&Channel::Broadcast, &f).delivered, 3);
    assert_eq!(
        (
            r1.try_recv().is_ok(),
            r2.try_recv().is_ok(),
            rb.try_recv().is_ok()
        ),
        (true, true, true)
    );
    assert!(!hub.unregister("alice", 1));
    assert!(hub.needs(&Channel::User("alice".into())));
    // Back to one session: it alone still gets the user's frames.
    while r1.try_recv().is_ok() {}
    while r2.try_recv().is_ok() {}
    assert_eq!(
        hub.dispatch(&Channel::User("alice".into()), &f).delivered,
        1
    );
    assert!(r2.try_recv().is_ok() && r1.try_recv().is_err());
    // A third session makes a map again; the user stays until the last leaves.
    let (a3, _r3) = session(4, 8);
    assert!(!hub.register("alice", &a3));
    assert!(!hub.unregister("alice", 2));
    assert!(
        !hub.unregister("alice", 99),
        "an unknown session changes nothing"
    );
    assert!(hub.unregister("alice", 4));
    assert!(!hub.needs(&Channel::User("alice".into())));
}
