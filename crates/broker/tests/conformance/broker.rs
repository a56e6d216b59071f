//! [`wsgate_broker::Broker`]: ids in publish order, subscriptions, the stored frame
//! byte for byte, history pages and exact replay.

use wsgate_broker::Channel;
use wsgate_protocol::server::frame_id;
use wsgate_protocol::MessageId;

use crate::{entry, next_frame, Factory, Made};

async fn ids_sort_in_publish_order_and_reach_subscribers(make: Factory) {
    let Made {
        b: backend,
        mut rx,
        _redis,
    } = make(100).await;
    let b = backend.broker;
    let room = Channel::Room("r1".into());
    // Not subscribed: nothing arrives.
    b.publish_entry("r1", &entry("r1", "before")).await.unwrap();
    b.subscribe(&room).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            b.publish_entry("r1", &entry("r1", &format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        let (ch, frame) = next_frame(&mut rx).await;
        assert_eq!(ch, room);
        // Byte for byte the frame the protocol defines (the Redis script splices it).
        assert_eq!(frame, entry("r1", &format!("m{i}")).frame(*id));
    }
    b.unsubscribe(&room).await.unwrap();
    b.publish_entry("r1", &entry("r1", "after")).await.unwrap();
    b.publish(&room, "{\"type\":\"typing\"}".into())
        .await
        .unwrap();
    assert!(rx.try_recv().is_err());
}

async fn history_pages_and_replay_is_exact(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(5).await;
    let b = backend.broker;
    let st = b.room_state("h").await.unwrap();
    assert_eq!(st.last_id, None);
    let empty = b.replay("h", MessageId::ZERO, usize::MAX).await.unwrap();
    assert!(empty.complete && empty.entries.is_empty());
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            b.publish_entry("h", &entry("h", &format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    let r = b.replay("h", ids[0], usize::MAX).await.unwrap();
    assert!(r.complete);
    assert_eq!(r.entries.iter().map(|e| e.0).collect::<Vec<_>>(), ids[1..]);
    assert_eq!(r.state.last_id, Some(ids[2]));
    // A since from the future is not vouched for.
    assert!(
        !b.replay("h", ids[2].next(), usize::MAX)
            .await
            .unwrap()
            .complete
    );
    // Publish far past the history length: Redis trims approximately (`MAXLEN ~`,
    // whole stream nodes), the memory broker exactly; the contract holds either way.
    for i in 3..300 {
        ids.push(
            b.publish_entry("h", &entry("h", &format!("m{i}")))
                .await
                .unwrap(),
        );
    }
    let all = b.replay("h", MessageId::ZERO, usize::MAX).await.unwrap();
    assert!(
        !all.complete,
        "entries were trimmed: a replay from the start must say so"
    );
    let kept: Vec<MessageId> = all.entries.iter().map(|e| e.0).collect();
    assert!(
        kept.len() >= 5 && kept.len() < ids.len(),
        "kept {}",
        kept.len()
    );
    let k = ids.len() - kept.len();
    assert_eq!(kept, ids[k..], "what is kept is the newest, in order");
    // From the first kept id, the replay is complete and exact…
    let r = b.replay("h", ids[k], usize::MAX).await.unwrap();
    assert!(r.complete, "nothing after ids[k] was trimmed");
    assert_eq!(
        r.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
        ids[k + 1..]
    );
    // … from the newest trimmed id a broker may vouch (the memory broker knows that id)
    // or not (Redis does not record it), but what it replays is exact…
    let r = b.replay("h", ids[k - 1], usize::MAX).await.unwrap();
    assert_eq!(r.entries.iter().map(|e| e.0).collect::<Vec<_>>(), ids[k..]);
    // … and from anything older it never vouches.
    assert!(
        !b.replay("h", ids[k - 2], usize::MAX)
            .await
            .unwrap()
            .complete
    );
    assert!(!b.replay("h", ids[0], usize::MAX).await.unwrap().complete);
    let n = ids.len();
    let id_of = |f: &bytes::Bytes| frame_id(std::str::from_utf8(f).unwrap()).unwrap();
    let page = b.history("h", None, 2, usize::MAX).await.unwrap();
    assert!(!page.more);
    let page = page.frames;
    assert_eq!(page.iter().map(id_of).collect::<Vec<_>>(), ids[n - 2..]);
    let page = b
        .history("h", Some(ids[n - 2]), 3, usize::MAX)
        .await
        .unwrap()
        .frames;
    assert_eq!(
        page.iter().map(id_of).collect::<Vec<_>>(),
        ids[n - 5..n - 2]
    );
}

async fn replays_and_pages_are_bounded_in_bytes(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(100).await;
    let b = backend.broker;
    let mut ids = Vec::new();
    let mut frames = Vec::new();
    for i in 0..10 {
        let e = entry("big", &format!("{i}").repeat(1000));
        let id = b.publish_entry("big", &e).await.unwrap();
        frames.push(e.frame(id));
        ids.push(id);
    }
    let one = frames[0].len();
    // Room for three frames and a half: the newest three, and not complete.
    let r = b.replay("big", ids[0], one * 7 / 2).await.unwrap();
    assert_eq!(r.entries.iter().map(|e| e.0).collect::<Vec<_>>(), ids[7..]);
    assert!(!r.complete, "a cut replay is never vouched for");
    assert_eq!(r.state.last_id, Some(ids[9]));
    // Enough room: complete.
    let r = b.replay("big", ids[0], one * 9).await.unwrap();
    assert!(r.complete);
    assert_eq!(r.entries.len(), 9);
    // History: the newest that fit, `more` when the bound (not the count) cut it.
    let page = b.history("big", None, 5, one * 2).await.unwrap();
    assert!(page.more);
    let got: Vec<String> = page
        .frames
        .iter()
        .map(|f| String::from_utf8(f.to_vec()).unwrap())
        .collect();
    assert_eq!(got, frames[8..]);
    let page = b.history("big", None, 2, one * 2).await.unwrap();
    assert!(!page.more, "the count, not the bound, ended this page");
    assert_eq!(page.frames.len(), 2);
}

async fn an_empty_room_keeps_its_epoch_when_written(make: Factory) {
    let Made {
        b: backend,
        rx: _rx,
        _redis,
    } = make(100).await;
    let b = backend.broker;
    let empty = b.room_state("fresh").await.unwrap();
    assert_eq!(empty.last_id, None);
    assert_eq!(
        b.room_state("fresh").await.unwrap(),
        empty,
        "stable while empty"
    );
    assert_ne!(
        b.room_state("other").await.unwrap().epoch,
        "",
        "every room has an epoch"
    );
    // A client that joined the empty room and saw nothing recovers exactly after the
    // first messages.
    let id = b
        .publish_entry("fresh", &entry("fresh", "m"))
        .await
        .unwrap();
    let r = b
        .replay("fresh", MessageId::ZERO, usize::MAX)
        .await
        .unwrap();
    assert_eq!(r.state.epoch, empty.epoch);
    assert!(r.complete);
    assert_eq!(r.entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![id]);
}

/// A batch is stored and published in its order, room by room (on a Redis Cluster
/// rooms on different shards are published side by side: there is no order across
/// rooms), each entry with its own id, and byte for byte what one publish at a time
/// would have made.
async fn a_batch_is_published_in_order(make: Factory) {
    let Made {
        b: backend,
        mut rx,
        _redis,
    } = make(100).await;
    let b = backend.broker;
    for r in ["a", "b"] {
        b.subscribe(&Channel::Room(r.into())).await.unwrap();
    }
    let batch: Vec<(String, _)> = (0..40)
        .map(|i| {
            let room = if i % 3 == 0 { "b" } else { "a" };
            (room.to_owned(), entry(room, &format!("m{i}")))
        })
        .collect();
    let ids: Vec<MessageId> = b
        .publish_entries(&batch)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(ids.len(), batch.len());
    for room in ["a", "b"] {
        let mine: Vec<_> = ids
            .iter()
            .zip(&batch)
            .filter(|(_, (r, _))| r == room)
            .map(|(id, _)| *id)
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{room}: {mine:?}");
    }
    let mut got: Vec<(Channel, String)> = Vec::new();
    for _ in &batch {
        got.push(next_frame(&mut rx).await);
    }
    for room in ["a", "b"] {
        let ch = Channel::Room(room.into());
        let expected: Vec<String> = ids
            .iter()
            .zip(&batch)
            .filter(|(_, (r, _))| r == room)
            .map(|(id, (_, e))| e.frame(*id))
            .collect();
        let arrived: Vec<String> = got
            .iter()
            .filter(|(c, _)| *c == ch)
            .map(|(_, f)| f.clone())
            .collect();
        assert_eq!(arrived, expected, "{room}");
    }
    assert!(b.publish_entries(&[]).await.is_empty());
}

/// A keyed publish happens once: its retry gets the first id and nothing is stored or
/// sent again; another key publishes; an unstored frame likewise.
async fn a_keyed_publish_happens_once(make: Factory) {
    let Made {
        b: backend,
        mut rx,
        _redis,
    } = make(100).await;
    let b = backend.broker;
    let room = Channel::Room("k".into());
    b.subscribe(&room).await.unwrap();
    let ttl = std::time::Duration::from_secs(60);
    let (id, fresh) = b
        .publish_entry_once("k", &entry("k", "first"), "key-1", ttl)
        .await
        .unwrap();
    assert!(fresh);
    let (again, fresh) = b
        .publish_entry_once("k", &entry("k", "retry"), "key-1", ttl)
        .await
        .unwrap();
    assert_eq!((again, fresh), (id, false));
    let (other, fresh) = b
        .publish_entry_once("k", &entry("k", "second"), "key-2", ttl)
        .await
        .unwrap();
    assert!(fresh && other > id);
    assert_eq!(next_frame(&mut rx).await.1, entry("k", "first").frame(id));
    assert_eq!(
        next_frame(&mut rx).await.1,
        entry("k", "second").frame(other)
    );
    let page = b.history("k", None, 10, usize::MAX).await.unwrap();
    assert_eq!(page.frames.len(), 2, "the retry stored nothing");
    let user = Channel::User("u".into());
    b.subscribe(&user).await.unwrap();
    assert!(b
        .publish_once(&user, "{\"n\":1}".into(), "key-3", ttl)
        .await
        .unwrap());
    assert!(!b
        .publish_once(&user, "{\"n\":2}".into(), "key-3", ttl)
        .await
        .unwrap());
    // Nothing was sent twice: the next frame on the channel is this barrier.
    b.publish(&user, "{\"barrier\":1}".into()).await.unwrap();
    assert_eq!(next_frame(&mut rx).await.1, "{\"n\":1}");
    assert_eq!(next_frame(&mut rx).await.1, "{\"barrier\":1}");
}

crate::suite!(
    a_keyed_publish_happens_once,
    a_batch_is_published_in_order,
    ids_sort_in_publish_order_and_reach_subscribers,
    history_pages_and_replay_is_exact,
    replays_and_pages_are_bounded_in_bytes,
    an_empty_room_keeps_its_epoch_when_written
);
