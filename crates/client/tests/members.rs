//! `Client::join`, `Client::members` and `Client::all_members` over a real socket,
//! against a small in-process server that speaks just enough of the protocol: pages of
//! 150 users (the cursor is the next index), one `rate_limited` answer, a `room_full`
//! room, and a frame unrelated to the request in the middle of each answer.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use wsgate_client::{Client, PresenceMode};

const USERS: usize = 150;
const WAIT: Duration = Duration::from_secs(10);

fn user(i: usize) -> Value {
    json!({"user_id": format!("u{i:03}"), "username": format!("User {i}")})
}

/// The answer to one client frame (and an unrelated frame sent before it).
fn answer(f: &Value, rate_limited_once: &mut bool) -> Vec<Value> {
    let r = f["ref"].clone();
    let room = f["room"].as_str().unwrap_or_default();
    match f["type"].as_str() {
        Some("join") if room == "full-room" => {
            vec![json!({"type":"error","code":"room_full","message":"the room is full","ref":r})]
        }
        Some("join") => vec![
            json!({"type":"presence","room":room,"event":"join","user":user(7),"count":USERS}),
            json!({"type":"joined","ref":r,"room":room,"members":(0..20).map(user).collect::<Vec<_>>(),
                "members_count":USERS,"members_more":true,"presence":"full","last_id":null,"epoch":"e1","recovered":true}),
        ],
        Some("members") => {
            let at: usize = f["cursor"].as_str().map_or(0, |c| c.parse().unwrap_or(0));
            if at == 40 && !*rate_limited_once {
                *rate_limited_once = true;
                return vec![
                    json!({"type":"error","code":"rate_limited","message":"slow down","ref":r}),
                ];
            }
            let limit = f["limit"].as_u64().unwrap_or(100) as usize;
            let end = USERS.min(at + limit);
            let next = (end < USERS).then(|| end.to_string());
            vec![
                json!({"type":"presence_count","room":"elsewhere","count":1}),
                json!({"type":"members","ref":r,"room":room,"members":(at..end).map(user).collect::<Vec<_>>(),
                    "next_cursor":next,"count":USERS}),
            ]
        }
        _ => vec![],
    }
}

async fn fake_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut ws = tokio_tungstenite::accept_async(tcp)
            .await
            .expect("handshake");
        let welcome = json!({"type":"welcome","protocol":1,"session_id":"s","node_id":"fake",
            "user_id":"me","username":"Me","heartbeat_ms":25000});
        ws.send(Message::Text(welcome.to_string().into()))
            .await
            .expect("welcome");
        let mut rate_limited_once = false;
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(t) = msg else { continue };
            let f: Value = serde_json::from_str(t.as_str()).expect("json");
            for out in answer(&f, &mut rate_limited_once) {
                if ws
                    .send(Message::Text(out.to_string().into()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    format!("ws://{addr}/ws")
}

#[tokio::test]
async fn join_members_and_all_members_over_a_socket() {
    let url = fake_server().await;
    let mut c = Client::connect(&url).await.expect("connect");
    assert_eq!(
        c.recv_type("welcome", WAIT).await.expect("welcome")["user_id"],
        "me"
    );

    let j = c.join("big", WAIT).await.expect("joined");
    assert_eq!(
        (j.members_count, j.members_more, j.presence, j.members.len()),
        (150, true, PresenceMode::Full, 20)
    );
    // the frame that came before the answer is kept for recv
    assert_eq!(c.recv(WAIT).await.expect("kept")["type"], "presence");

    let err = c.join("full-room", WAIT).await.expect_err("room_full");
    assert_eq!(err.code(), Some("room_full"));

    let page = c.members("big", None, Some(7), WAIT).await.expect("a page");
    assert_eq!(
        (page.members.len(), page.next_cursor.as_deref(), page.count),
        (7, Some("7"), 150)
    );
    let page = c
        .members("big", Some("147"), Some(7), WAIT)
        .await
        .expect("the last page");
    assert_eq!((page.members.len(), page.next_cursor), (3, None));

    // every page to the end (one rate_limited answer on the way is retried)
    let all = c.all_members("big", 20, 10_000, WAIT).await.expect("all");
    assert!(all.complete);
    assert_eq!((all.count, all.pages, all.next_cursor), (150, 8, None));
    let ids: std::collections::BTreeSet<_> =
        all.members.iter().map(|m| m.user_id.clone()).collect();
    assert_eq!((all.members.len(), ids.len()), (150, 150));

    // bounded by max
    let some = c.all_members("big", 20, 30, WAIT).await.expect("some");
    assert_eq!(
        (
            some.members.len(),
            some.complete,
            some.next_cursor.as_deref()
        ),
        (30, false, Some("30"))
    );
    let _ = c.close().await;
}
