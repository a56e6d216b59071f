//! [`wsgate_broker::Outbox`] and [`wsgate_broker::Online`]: presence transitions and a
//! user's last session are recorded once each, in order; an event leaves only when
//! acknowledged, one taken and left idle is taken again with the same id, one held
//! is not; a full outbox drops its oldest and counts them. On Redis (one server and a
//! Redis Cluster): a dead node's transitions are recorded once by the survivor that
//! reaps it, and what it took and never acknowledged is taken by a survivor.

use std::collections::HashSet;
use std::time::Duration;

use wsgate_broker::{Event, EventName, NodeReport, Outbox, RedisTopology, SessionRef, Taken};
use wsgate_e2e::{RedisCluster, RedisServer};

use crate::{member, redis_node, settings, Factory, Made, OUTBOX_LEN};

/// Longer than any test: what is taken stays taken.
const LONG: Duration = Duration::from_secs(3600);

fn s(id: &str, user: &str) -> SessionRef {
    SessionRef {
        session_id: id.into(),
        user: member(user),
    }
}

/// Takes everything the outbox will give now.
async fn take_all(o: &dyn Outbox) -> Vec<Taken> {
    let mut all = Vec::new();
    loop {
        let got = o.take(7, LONG).await.unwrap();
        if got.is_empty() {
            return all;
        }
        all.extend(got);
    }
}

/// (name, room, user) of the events of `room` (`""`: of no room), in order.
fn of(taken: &[Taken], room: &str) -> Vec<(&'static str, String)> {
    taken
        .iter()
        .filter(|t| t.event.room.as_deref().unwrap_or("") == room)
        .map(|t| {
            let user = t.event.user_id.clone().unwrap_or_default();
            (t.event.name.as_str(), user)
        })
        .collect()
}

fn brief(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    list.iter().map(|(n, u)| (*n, u.to_string())).collect()
}

fn message(room: &str, n: usize) -> Event {
    Event {
        name: EventName::ClientMessage,
        room: Some(room.into()),
        user_id: Some("u".into()),
        message: Some(format!("{{\"n\":{n}}}")),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn presence_transitions_are_recorded_once(make: Factory) {
    let Made { b, rx: _rx, _redis } = make(5).await;
    let (p, o) = (&b.presence, &*b.outbox);
    // Two rooms (on a cluster, in two slots: two outbox streams).
    for room in ["alpha", "beta"] {
        for (sid, user) in [("s1", "u"), ("s2", "u"), ("s3", "v")] {
            p.add(room, &s(sid, user), 0).await.unwrap();
        }
        for sid in ["s1", "s2", "s2", "s3"] {
            let user = if sid == "s3" { "v" } else { "u" };
            p.remove(room, &s(sid, user)).await.unwrap();
        }
    }
    let got = take_all(o).await;
    let want = brief(&[
        ("room_occupied", ""),
        ("member_added", "u"),
        ("member_added", "v"),
        ("member_removed", "u"),
        ("member_removed", "v"),
        ("room_vacated", ""),
    ]);
    assert_eq!(of(&got, "alpha"), want);
    assert_eq!(of(&got, "beta"), want);
    assert_eq!(got.len(), 12);
    let ids: HashSet<&str> = got.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), 12, "ids are unique");
    assert!(got.iter().all(|t| t.time_ms.abs_diff(now_ms()) < 60_000));
    assert_eq!(o.depth(), 12, "taken, not yet acknowledged");
    o.ack(&got).await.unwrap();
    assert!(o
        .take(10, Duration::from_millis(1))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(o.depth(), 0);
}

async fn user_offline_follows_the_last_session(make: Factory) {
    let Made { b, rx: _rx, _redis } = make(5).await;
    let on = &b.online;
    for (sid, user) in [("s1", "u"), ("s2", "u"), ("s1", "u"), ("s3", "w")] {
        on.connect(&s(sid, user)).await.unwrap();
    }
    assert!(!on.disconnect(&s("s1", "u")).await.unwrap());
    assert!(
        on.disconnect(&s("s2", "u")).await.unwrap(),
        "u's last session"
    );
    assert!(!on.disconnect(&s("s2", "u")).await.unwrap(), "not twice");
    assert!(
        !on.disconnect(&s("s9", "x")).await.unwrap(),
        "never counted"
    );
    on.connect(&s("s4", "u")).await.unwrap();
    assert!(
        on.disconnect(&s("s4", "u")).await.unwrap(),
        "back, and gone again"
    );
    let got = take_all(&*b.outbox).await;
    assert_eq!(
        of(&got, ""),
        brief(&[("user_offline", "u"), ("user_offline", "u")])
    );
    assert_eq!(got.len(), 2, "w is still online: {got:?}");
}

async fn events_leave_only_when_acknowledged(make: Factory) {
    let Made { b, rx: _rx, _redis } = make(5).await;
    let o = &*b.outbox;
    o.record("r", &[message("r", 1), message("r", 2)])
        .await
        .unwrap();
    let first = o.take(1, LONG).await.unwrap();
    let second = o.take(10, LONG).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].event, message("r", 1));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].event, message("r", 2));
    assert!(
        o.take(10, LONG).await.unwrap().is_empty(),
        "taken events are not handed out again while fresh"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    o.hold(&second).await.unwrap();
    let again = o.take(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(
        again, first,
        "idle past `stale`: taken again, same id; held: not"
    );
    o.ack(&[first, second].concat()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(o
        .take(10, Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
}

async fn a_full_outbox_drops_the_oldest(make: Factory) {
    let Made { b, rx: _rx, _redis } = make(5).await;
    let o = &*b.outbox;
    let before = o.dropped();
    for n in 1..=OUTBOX_LEN + 5 {
        o.record("r", &[message("r", n)]).await.unwrap();
    }
    let got = take_all(o).await;
    let kept: Vec<Event> = got.into_iter().map(|t| t.event).collect();
    let want: Vec<Event> = (6..=OUTBOX_LEN + 5).map(|n| message("r", n)).collect();
    assert_eq!(kept, want);
    assert_eq!(o.dropped() - before, 5);
}

crate::suite!(
    presence_transitions_are_recorded_once,
    user_offline_follows_the_last_session,
    events_leave_only_when_acknowledged,
    a_full_outbox_drops_the_oldest
);

/// Settings of node `id` on one Redis or a Redis Cluster.
type Node<'a> = &'a dyn Fn(&str) -> (wsgate_broker::RedisSettings, usize);

#[tokio::test]
async fn redis_a_dead_node_owes_its_events_once() {
    let server = RedisServer::start();
    a_dead_node_owes_its_events_once(&|id| settings(server.url(), id, 5)).await;
}

#[tokio::test]
async fn redis_cluster_a_dead_node_owes_its_events_once() {
    let cluster = RedisCluster::start(3, 0);
    a_dead_node_owes_its_events_once(&|id| {
        let (mut s, len) = settings(String::new(), id, 5);
        s.topology = RedisTopology::Cluster(cluster.seeds());
        (s, len)
    })
    .await;
}

/// Node d2 dies with sessions in two rooms (on a cluster, two slots) and events it
/// took and never acknowledged; the survivor d1 reaps it and takes them over.
async fn a_dead_node_owes_its_events_once(node: Node<'_>) {
    let (a, _ra) = redis_node(node("d1")).await;
    let (b, _rb) = redis_node(node("d2")).await;
    a.registry.heartbeat(NodeReport::default()).await.unwrap();
    b.registry.heartbeat(NodeReport::default()).await.unwrap();
    for (n, sid, user, room) in [
        (&b, "s1", "u", "room"),
        (&a, "s2", "w", "room"),
        (&b, "s3", "u", "far"),
    ] {
        n.presence.add(room, &s(sid, user), 0).await.unwrap();
        n.online.connect(&s(sid, user)).await.unwrap();
    }
    // d2 takes every event so far and dies before acknowledging them.
    let owed = take_all(&*b.outbox).await;
    assert_eq!(owed.len(), 5, "{owed:?}");
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.registry.cluster().await.unwrap().unwrap().nodes.len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "d2 never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.registry.heartbeat(NodeReport::default()).await.unwrap();
    a.registry.heartbeat(NodeReport::default()).await.unwrap();
    // What the reap recorded: once, however many times it was looked at.
    let reaped = take_all(&*a.outbox).await;
    assert_eq!(of(&reaped, "room"), brief(&[("member_removed", "u")]));
    assert_eq!(
        of(&reaped, "far"),
        brief(&[("member_removed", "u"), ("room_vacated", "")])
    );
    assert_eq!(of(&reaped, ""), brief(&[("user_offline", "u")]));
    assert_eq!(reaped.len(), 4);
    a.outbox.ack(&reaped).await.unwrap();
    // What d2 took: taken over once idle.
    let mut over = a.outbox.take(10, Duration::from_millis(100)).await.unwrap();
    over.sort_by(|x, y| x.id.cmp(&y.id));
    let mut owed = owed;
    owed.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(over, owed);
    a.outbox.ack(&over).await.unwrap();
    assert!(a
        .outbox
        .take(10, Duration::from_millis(1))
        .await
        .unwrap()
        .is_empty());
}
