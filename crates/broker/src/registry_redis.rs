//! [`RedisRegistry`]: the node registry of a cluster, on Redis. Each node renews a
//! liveness key twice per heartbeat interval; a node whose key expired is reaped by
//! the first survivor to take its lock: its sessions leave presence, and the rooms
//! hear `leave` for users whose last session went with it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;
use wsgate_protocol::server::{PresenceEvent, PresenceMode, ServerFrame};

use crate::broker::Channel;
use crate::error::Result;
use crate::outbox_redis::RedisRecorder;
use crate::presence_redis::pairs_to_members;
use crate::redis_link::{now_ms, RedisLink};
use crate::registry::{ClusterStats, NodeReport, Registry};

/// The registry in Redis.
pub struct RedisRegistry {
    /// The command connection.
    link: Arc<RedisLink>,
    /// What reaping records for webhooks (`member_removed`, `room_vacated`,
    /// `user_offline`).
    recorder: Arc<RedisRecorder>,
    /// Removes a dead node's presence entries from one room.
    reap: Script,
    /// Set once this node has cleared what a previous run under the same node id
    /// left in presence.
    reaped_self: AtomicBool,
}

impl RedisRegistry {
    /// The registry over `link`; reaping records what `recorder` says.
    pub fn new(link: Arc<RedisLink>, recorder: Arc<RedisRecorder>) -> Self {
        RedisRegistry {
            link,
            recorder,
            reap: Script::new(&crate::scripts_webhooks::presence_reap()),
            reaped_self: AtomicBool::new(false),
        }
    }

    /// Removes `node`'s presence entries from every room it had, announcing `leave`
    /// for users whose last session went with it.
    async fn reap(&self, node: &str) -> Result<()> {
        let keys = &self.link.keys;
        // Where the node's room indexes are: one hash on one Redis; on a cluster one
        // per slot it had rooms in, listed in its `node-slots` set.
        let slots: Vec<u16> = if keys.is_sharded() {
            let set = keys.node_slots(node);
            self.link
                .with_conn(|mut c| async move {
                    redis::cmd("SMEMBERS").arg(set).query_async(&mut c).await
                })
                .await?
        } else {
            Vec::new()
        };
        let indexes: Vec<String> = if keys.is_sharded() {
            slots.iter().map(|s| keys.node_rooms_in(node, *s)).collect()
        } else {
            vec![keys.node_rooms(node, "")]
        };
        for index in &indexes {
            self.reap_index(node, index).await?;
        }
        // The users it had sessions of (`user_offline`), and on a cluster the
        // doorbells of every outbox it may have recorded in without ringing.
        let users: Vec<String> = if keys.is_sharded() {
            slots.iter().map(|s| keys.node_users_in(node, *s)).collect()
        } else {
            vec![keys.node_users(node, "")]
        };
        for index in &users {
            crate::online_redis::reap_users(&self.link, &self.recorder, node, index).await?;
        }
        if keys.is_sharded() && !self.recorder.recording.events.is_empty() {
            for s in &slots {
                self.recorder.ring(&keys.webhooks_in(*s)).await?;
            }
        }
        let nodes = keys.nodes();
        let node_id = node.to_owned();
        let last = if keys.is_sharded() {
            // Each index lives in its own slot; the set and the registry entry in
            // the registry's, together.
            for index in indexes {
                self.link
                    .with_conn(|mut c| async move {
                        redis::cmd("DEL").arg(index).query_async::<()>(&mut c).await
                    })
                    .await?;
            }
            keys.node_slots(node)
        } else {
            keys.node_rooms(node, "")
        };
        self.link
            .with_conn(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .del(last)
                    .hdel(nodes, node_id)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    /// Removes `node`'s presence entries from every room of one of its indexes.
    async fn reap_index(&self, node: &str, index: &str) -> Result<()> {
        let keys = &self.link.keys;
        let rooms: Vec<String> = self
            .link
            .with_conn(|mut c| {
                let k = index.to_owned();
                async move { redis::cmd("HKEYS").arg(k).query_async(&mut c).await }
            })
            .await?;
        for room in rooms {
            let rules = self.link.policy.rules(&room);
            let keys5 = [
                keys.presence(&room),
                keys.presence_users(&room),
                keys.presence_names(&room),
                keys.presence_over(&room),
                keys.webhooks(&room),
            ];
            let (r, keys5, room_ref) = (&self.recorder, &keys5, &room);
            let reply: Vec<redis::Value> = self
                .link
                .with_conn(|mut c| async move {
                    self.reap
                        .key(&keys5[..])
                        .arg(node)
                        .arg(rules.presence_low_water())
                        .arg(r.mask())
                        .arg(r.max_len())
                        .arg(room_ref)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            let int = |v: Option<&redis::Value>| match v {
                Some(redis::Value::Int(i)) => *i,
                _ => 0,
            };
            let (count, over) = (int(reply.first()).max(0) as u64, int(reply.get(1)) == 1);
            r.recorded(&keys5[4], int(reply.get(2)), int(reply.get(3)))
                .await;
            let gone: Vec<String> = reply
                .iter()
                .skip(4)
                .filter_map(|v| match v {
                    redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
                    _ => None,
                })
                .collect();
            if gone.is_empty() {
                continue;
            }
            // What the room hears, as from a member that left: each `leave` in a room
            // that lists members, one count in a room that shows only its count.
            let frames: Vec<String> = match (rules.presence, over) {
                (PresenceMode::Off, _) => Vec::new(),
                (PresenceMode::Full, false) => pairs_to_members(gone)
                    .into_iter()
                    .map(|user| {
                        ServerFrame::Presence {
                            room: room.clone(),
                            event: PresenceEvent::Leave,
                            user,
                            count,
                        }
                        .encode()
                    })
                    .collect(),
                _ => vec![ServerFrame::PresenceCount {
                    room: room.clone(),
                    count,
                }
                .encode()],
            };
            let channel = keys.channel(&Channel::Room(room.clone()));
            for frame in frames {
                let channel = channel.clone();
                self.link
                    .with_conn(|mut c| async move {
                        redis::cmd(keys.publish_command())
                            .arg(channel)
                            .arg(frame)
                            .query_async::<()>(&mut c)
                            .await
                    })
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Registry for RedisRegistry {
    async fn heartbeat(&self, report: NodeReport) -> Result<bool> {
        let keys = &self.link.keys;
        let me = self.link.settings.node_id.clone();
        if !self.reaped_self.load(Ordering::Acquire) {
            // Entries a previous run under this node id left behind (it was killed).
            self.reap(&me).await?;
            self.reaped_self.store(true, Ordering::Release);
        }
        let alive_ms = self.link.settings.heartbeat.as_millis().max(100) as u64;
        let entry =
            serde_json::json!({"connections": report.connections, "ts": now_ms()}).to_string();
        let (alive, nodes) = (keys.node_alive(&me), keys.nodes());
        let (missing, others): (bool, Vec<String>) = self
            .link
            .with_conn(|mut c| {
                let me = me.clone();
                async move {
                    let (_, added, ids): ((), i64, Vec<String>) = redis::pipe()
                        .atomic()
                        .cmd("SET")
                        .arg(alive)
                        .arg(1)
                        .arg("PX")
                        .arg(alive_ms)
                        .hset(&nodes, &me, entry)
                        .hkeys(&nodes)
                        .query_async(&mut c)
                        .await?;
                    Ok((added == 1, ids.into_iter().filter(|id| *id != me).collect()))
                }
            })
            .await?;
        if missing {
            // Redis lost the registry, and with it, maybe, this node's slot set.
            self.link.forget_noted_slots();
        }
        for other in others {
            let (alive, lock) = (keys.node_alive(&other), keys.reap_lock(&other));
            let claimed: bool = self
                .link
                .with_conn(|mut c| async move {
                    let exists: bool = redis::cmd("EXISTS").arg(alive).query_async(&mut c).await?;
                    if exists {
                        return Ok(false);
                    }
                    let got: Option<String> = redis::cmd("SET")
                        .arg(lock)
                        .arg(1)
                        .arg("NX")
                        .arg("PX")
                        .arg(10_000)
                        .query_async(&mut c)
                        .await?;
                    Ok(got.is_some())
                })
                .await?;
            if claimed {
                tracing::warn!(node = %other, "node stopped reporting; removing its sessions from presence");
                self.reap(&other).await?;
            }
        }
        Ok(missing)
    }

    async fn cluster(&self) -> Result<Option<ClusterStats>> {
        let keys = &self.link.keys;
        let nodes = keys.nodes();
        let entries: Vec<(String, String)> = self
            .link
            .with_conn(
                |mut c| async move { redis::cmd("HGETALL").arg(nodes).query_async(&mut c).await },
            )
            .await?;
        let mut stats = ClusterStats::default();
        for (id, entry) in entries {
            let alive_key = keys.node_alive(&id);
            let alive: bool = self
                .link
                .with_conn(|mut c| async move {
                    redis::cmd("EXISTS")
                        .arg(alive_key)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if alive {
                let v: serde_json::Value = serde_json::from_str(&entry).unwrap_or_default();
                stats.connections += v["connections"].as_u64().unwrap_or(0);
                stats.nodes.push(id);
            }
        }
        stats.nodes.sort();
        Ok(Some(stats))
    }

    async fn deregister(&self) -> Result<()> {
        let keys = &self.link.keys;
        let me = self.link.settings.node_id.clone();
        let (alive, nodes) = (keys.node_alive(&me), keys.nodes());
        self.link
            .with_conn(|mut c| async move {
                redis::pipe()
                    .atomic()
                    .del(alive)
                    .hdel(nodes, me)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }
}
