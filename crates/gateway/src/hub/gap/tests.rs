//! Unit tests of [`super`]: holding, refilling and merging by id, resync, overflow.
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use wsgate_protocol::server::frame_id;

use super::*;
use crate::handle::{Control, SessionHandle};
use crate::queue::Queue;
use wsgate_broker::Channel;

fn hub(frames: usize) -> Hub {
    Hub::new(PendingCap {
        frames,
        bytes: 1 << 20,
    })
}

fn session(id: u64) -> (SessionHandle, Arc<Queue>) {
    let queue = Queue::new(256, 1 << 20);
    let control = Arc::new(Control::new(CancellationToken::new()));
    let handle = SessionHandle {
        id,
        key: Arc::from(format!("s{id}")),
        queue: queue.clone(),
        control,
        presence: None,
    };
    (handle, queue)
}

fn msg(id: &str) -> Utf8Bytes {
    Utf8Bytes::from(format!(r#"{{"type":"message","id":"{id}","room":"r"}}"#))
}

fn presence() -> Utf8Bytes {
    Utf8Bytes::from(r#"{"type":"presence","room":"r"}"#)
}

fn state(epoch: &str, last: Option<MessageId>) -> RoomState {
    RoomState {
        epoch: epoch.into(),
        last_id: last,
    }
}

/// What a queue holds, one string per frame: a stored frame's id, else its type.
fn drain(q: &Queue) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(item) = q.try_pop() {
        let frames = match item {
            Outbound::Frame(f) | Outbound::Stored(f, _) => vec![f],
            Outbound::Batch(fs) => fs,
            Outbound::Binary(_) => panic!("no binary frames here"),
        };
        for f in frames {
            out.push(match frame_id(f.as_str()) {
                Some(id) => id.to_string(),
                None => wsgate_protocol::server::frame_type(f.as_str())
                    .unwrap_or("?")
                    .to_owned(),
            });
        }
    }
    out
}

fn room() -> Channel {
    Channel::Room("r".into())
}

fn live_member(hub: &Hub, id: u64, st: &RoomState) -> Arc<Queue> {
    let (h, q) = session(id);
    hub.join(
        "r",
        &h,
        PendingCap {
            frames: 64,
            bytes: 1 << 20,
        },
    );
    hub.finish_join("r", id, vec![], None, st).unwrap();
    q
}

fn entries(ids: &[u64]) -> Refill {
    Refill::Entries(
        ids.iter()
            .map(|i| {
                let id = MessageId::new(*i, 0);
                (id, msg(&id.to_string()))
            })
            .collect(),
    )
}

#[test]
fn a_refill_comes_first_then_the_held_frames_without_duplicates() {
    let hub = hub(64);
    let st = state("e1", Some(MessageId::new(1, 0)));
    let a = live_member(&hub, 1, &st);
    let b = live_member(&hub, 2, &st);
    hub.dispatch(&room(), &msg("2-0"));
    let gap = hub.hold_all();
    assert_eq!(hub.held_rooms(gap), vec!["r".to_owned()]);
    assert_eq!(
        hub.gap_start("r", gap),
        GapStart::From(Mark {
            epoch: "e1".into(),
            id: MessageId::new(2, 0)
        })
    );
    // Arrive on the new link while the stream is read: 5-0 is also in the refill.
    hub.dispatch(&room(), &msg("5-0"));
    hub.dispatch(&room(), &presence());
    hub.dispatch(&room(), &msg("6-0"));
    for q in [&a, &b] {
        assert_eq!(drain(q), ["2-0"], "nothing new before the refill");
    }
    let done = hub.finish_refill("r", gap, entries(&[3, 4, 5]));
    assert_eq!(
        done,
        Finished::Live(Fanout {
            delivered: 2 * 5,
            slow: 0
        })
    );
    for q in [&a, &b] {
        assert_eq!(drain(q), ["3-0", "4-0", "5-0", "presence", "6-0"]);
    }
    // A frame received before the hold ended but dispatched after it: dropped once.
    let gap2 = hub.hold_all();
    hub.dispatch(&room(), &msg("8-0"));
    assert!(matches!(
        hub.finish_refill("r", gap2, entries(&[7, 8])),
        Finished::Live(_)
    ));
    hub.dispatch(&room(), &msg("8-0"));
    hub.dispatch(&room(), &msg("9-0"));
    assert_eq!(drain(&a), ["7-0", "8-0", "9-0"]);
    assert_eq!(hub.gap_start("r", gap2), GapStart::Stale, "live again");
}

#[test]
fn resync_reaches_live_and_joining_members_and_moves_the_mark() {
    let hub = hub(64);
    let a = live_member(&hub, 1, &state("e1", None));
    let (joining, jq) = session(2);
    hub.join(
        "r",
        &joining,
        PendingCap {
            frames: 64,
            bytes: 1 << 20,
        },
    );
    let gap = hub.hold_all();
    hub.dispatch(&room(), &msg("8-0"));
    hub.dispatch(&room(), &msg("10-0"));
    let now = state("e2", Some(MessageId::new(9, 0)));
    assert!(matches!(
        hub.finish_refill("r", gap, Refill::Resync(now.clone())),
        Finished::Live(_)
    ));
    // 8-0 is what the reload gets; 10-0 follows live.
    assert_eq!(drain(&a), ["resync", "10-0"]);
    let joined = Utf8Bytes::from(r#"{"type":"joined"}"#);
    hub.finish_join("r", 2, vec![joined], None, &now).unwrap();
    assert_eq!(drain(&jq), ["joined", "resync", "10-0"]);
    let gap = hub.hold_all();
    assert_eq!(
        hub.gap_start("r", gap),
        GapStart::From(Mark {
            epoch: "e2".into(),
            id: MessageId::new(10, 0)
        })
    );
}

#[test]
fn a_room_whose_joins_have_not_finished_has_no_mark() {
    let hub = hub(64);
    let (joining, _q) = session(1);
    hub.join(
        "r",
        &joining,
        PendingCap {
            frames: 64,
            bytes: 1 << 20,
        },
    );
    let gap = hub.hold_all();
    assert_eq!(hub.gap_start("r", gap), GapStart::Unknown);
}

#[test]
fn an_overflowing_hold_reads_again_and_stale_work_does_nothing() {
    let hub = hub(2);
    let a = live_member(&hub, 1, &state("e1", Some(MessageId::new(1, 0))));
    let gap = hub.hold_all();
    for i in 3..=6 {
        hub.dispatch(&room(), &msg(&format!("{i}-0")));
    }
    // The refill read up to 3-0; 4-0 was held, 5-0 and 6-0 did not fit.
    assert_eq!(
        hub.finish_refill("r", gap, entries(&[2, 3])),
        Finished::ReadAgain
    );
    assert_eq!(drain(&a), ["2-0", "3-0"]);
    assert_eq!(
        hub.gap_start("r", gap),
        GapStart::From(Mark {
            epoch: "e1".into(),
            id: MessageId::new(3, 0)
        })
    );
    hub.dispatch(&room(), &msg("7-0"));
    // A later gap makes the first one's work stale.
    let gap2 = hub.hold_all();
    assert_eq!(hub.finish_refill("r", gap, entries(&[4])), Finished::Stale);
    assert!(matches!(
        hub.finish_refill("r", gap2, entries(&[4, 5, 6, 7])),
        Finished::Live(_)
    ));
    assert_eq!(drain(&a), ["4-0", "5-0", "6-0", "7-0"]);
    // A room emptied while held is stale too.
    let gap3 = hub.hold_all();
    assert!(hub.leave("r", 1));
    assert_eq!(hub.gap_start("r", gap3), GapStart::Stale);
    assert_eq!(hub.finish_refill("r", gap3, entries(&[8])), Finished::Stale);
}
