//! [`wsgate_broker::Registry`]: a single node has no cluster to report to; in Redis,
//! nodes register with their totals, deregister, and a node that stops reporting is
//! reaped: its sessions leave presence and the rooms hear `leave`.

use std::time::Duration;

use wsgate_broker::{Added, Channel, NodeReport, RedisSettings, RedisTopology, SessionRef};
use wsgate_e2e::{RedisCluster, RedisServer};
use wsgate_protocol::server::{PresenceEvent, ServerFrame};

use crate::{member, memory, next_frame, redis_node, settings, Made};

fn edge(a: Added) -> bool {
    match a {
        Added::In(c, _) => c.edge,
        Added::Full => panic!("full"),
    }
}

#[tokio::test]
async fn a_single_node_has_no_cluster() {
    let Made { b, .. } = memory(5).await;
    assert!(!b
        .registry
        .heartbeat(NodeReport { connections: 3 })
        .await
        .unwrap());
    assert_eq!(b.registry.cluster().await.unwrap(), None);
    b.registry.deregister().await.unwrap();
}

/// Settings of node `id` on one Redis or a Redis Cluster.
type Node<'a> = &'a dyn Fn(&str) -> (RedisSettings, usize);

fn on_server(server: &RedisServer) -> impl Fn(&str) -> (RedisSettings, usize) + '_ {
    move |id| settings(server.url(), id, 5)
}

fn on_cluster(cluster: &RedisCluster) -> impl Fn(&str) -> (RedisSettings, usize) + '_ {
    move |id| {
        let (mut s, len) = settings(String::new(), id, 5);
        s.topology = RedisTopology::Cluster(cluster.seeds());
        (s, len)
    }
}

#[tokio::test]
async fn redis_nodes_report_totals_and_deregister() {
    let server = RedisServer::start();
    nodes_report_totals_and_deregister(&on_server(&server)).await;
}

#[tokio::test]
async fn redis_reaps_a_node_that_stopped_reporting() {
    let server = RedisServer::start();
    reaps_a_node_that_stopped_reporting(&on_server(&server)).await;
}

#[tokio::test]
async fn redis_cluster_registry() {
    let cluster = RedisCluster::start(3, 0);
    nodes_report_totals_and_deregister(&on_cluster(&cluster)).await;
    reaps_a_node_that_stopped_reporting(&on_cluster(&cluster)).await;
}

async fn nodes_report_totals_and_deregister(node: Node<'_>) {
    let (a, _ra) = redis_node(node("n1")).await;
    let (b, _rb) = redis_node(node("n2")).await;
    a.registry
        .heartbeat(NodeReport { connections: 3 })
        .await
        .unwrap();
    b.registry
        .heartbeat(NodeReport { connections: 4 })
        .await
        .unwrap();
    let stats = a.registry.cluster().await.unwrap().unwrap();
    assert_eq!(stats.nodes, vec!["n1", "n2"]);
    assert_eq!(stats.connections, 7);
    b.registry.deregister().await.unwrap();
    let stats = a.registry.cluster().await.unwrap().unwrap();
    assert_eq!((stats.nodes, stats.connections), (vec!["n1".into()], 3));
}

/// (On a cluster, the rooms `room` and `far` are in slots of different shards.)
async fn reaps_a_node_that_stopped_reporting(node: Node<'_>) {
    let (a, mut ra) = redis_node(node("r1")).await;
    let (b, _rb) = redis_node(node("r2")).await;
    let on_b = |s: &str, u: &str| SessionRef {
        session_id: s.into(),
        user: member(u),
    };
    // A node's first heartbeat clears what an earlier run under its id left behind:
    // both start before any session.
    assert!(
        a.registry.heartbeat(NodeReport::default()).await.unwrap(),
        "a first report: not in the registry yet"
    );
    assert!(b.registry.heartbeat(NodeReport::default()).await.unwrap());
    assert!(!a.registry.heartbeat(NodeReport::default()).await.unwrap());
    // n2 holds the only session of u and one of two of w (the other is on n1).
    assert!(edge(
        b.presence.add("room", &on_b("s1", "u"), 0).await.unwrap()
    ));
    assert!(edge(
        b.presence.add("room", &on_b("s2", "w"), 0).await.unwrap()
    ));
    assert!(!edge(
        a.presence.add("room", &on_b("s3", "w"), 0).await.unwrap()
    ));
    assert!(edge(
        b.presence.add("far", &on_b("s4", "u"), 0).await.unwrap()
    ));
    b.registry.heartbeat(NodeReport::default()).await.unwrap();
    a.broker
        .subscribe(&Channel::Room("room".into()))
        .await
        .unwrap();
    a.registry.heartbeat(NodeReport::default()).await.unwrap();
    assert_eq!(
        a.presence.members("room", None, 10).await.unwrap().members,
        vec![member("u"), member("w")],
        "n2 is alive: nothing is reaped"
    );
    // r2 stops reporting; its liveness key expires after one heartbeat interval (1 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.registry.cluster().await.unwrap().unwrap().nodes.len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "n2 never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.registry.heartbeat(NodeReport::default()).await.unwrap();
    assert_eq!(
        a.presence.members("room", None, 10).await.unwrap().members,
        vec![member("w")],
        "u left with n2; w stays (a session on n1)"
    );
    assert_eq!(a.presence.count("far").await.unwrap(), (0, false));
    let (ch, frame) = next_frame(&mut ra).await;
    assert_eq!(ch, Channel::Room("room".into()));
    let leave = ServerFrame::Presence {
        room: "room".into(),
        event: PresenceEvent::Leave,
        user: member("u"),
        count: 1,
    };
    assert_eq!(frame, leave.encode());
    assert_eq!(a.presence.count("room").await.unwrap(), (1, false));
    // n2 was alive all along (a partition): its next report says it was missing, so
    // it adds its sessions again.
    assert!(
        b.registry.heartbeat(NodeReport::default()).await.unwrap(),
        "a reaped node learns it at its next report"
    );
    assert!(!b.registry.heartbeat(NodeReport::default()).await.unwrap());
}
