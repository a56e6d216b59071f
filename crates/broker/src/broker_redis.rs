//! [`RedisBroker`]: publishing and history of a cluster, on Redis.
//!
//! Room messages are stored and published by one Lua script ([`crate::scripts`]),
//! so every node delivers them in stream order; history, recovery and epochs come
//! from the stream and its meta hash. Fan-out arrives through the node's one Pub/Sub
//! connection ([`crate::redis_pubsub`]).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;
use wsgate_protocol::server::StoredEntry;
use wsgate_protocol::MessageId;

use crate::broker::{Broker, Channel, HistoryPage, Replay, RoomState};
use crate::error::{Error, Result};
use crate::redis_link::{fresh_epoch, RedisLink};
use crate::redis_pubsub::PubSub;
use crate::scripts;

/// The Redis broker of a cluster node.
pub struct RedisBroker {
    /// The command connection.
    link: Arc<RedisLink>,
    /// The Pub/Sub connection.
    pubsub: Arc<PubSub>,
    /// Stores and publishes one entry.
    publish: Script,
    /// The same at most once per idempotency key.
    publish_once: Script,
    /// Publishes an unstored frame at most once per idempotency key.
    publish_frame_once: Script,
    /// The room's state and, with a `since`, what came after it.
    replay: Script,
    /// A page of history.
    history: Script,
}

impl RedisBroker {
    /// The broker over `link`, receiving through `pubsub`.
    pub fn new(link: Arc<RedisLink>, pubsub: Arc<PubSub>) -> Self {
        RedisBroker {
            link,
            pubsub,
            publish: Script::new(&scripts::publish_entry()),
            publish_once: Script::new(&scripts::publish_entry_once()),
            publish_frame_once: Script::new(scripts::PUBLISH_ONCE),
            replay: Script::new(&scripts::replay()),
            history: Script::new(&scripts::history()),
        }
    }

    /// Whether the Pub/Sub connection is up.
    pub fn is_up(&self) -> bool {
        self.pubsub.is_up()
    }

    async fn replay_raw(
        &self,
        room: &str,
        since: Option<MessageId>,
        max_bytes: usize,
    ) -> Result<Replay> {
        let keys = &self.link.keys;
        let out: Vec<Vec<u8>> = self
            .link
            .with_conn(|mut c| async move {
                self.replay
                    .key(keys.history(room))
                    .key(keys.room_meta(room))
                    .key(keys.store_epoch())
                    .arg(fresh_epoch())
                    .arg(self.link.ttl_s(room))
                    .arg(since.map(|s| s.to_string()).unwrap_or_default())
                    .arg(max_bytes)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut it = out.into_iter();
        let epoch = it.next().map(|b| text(&b)).unwrap_or_default();
        let last_id: Option<MessageId> = it.next().and_then(|b| text(&b).parse().ok());
        let max_deleted: MessageId = it
            .next()
            .and_then(|b| text(&b).parse().ok())
            .unwrap_or_default();
        let cut = it.next().is_some_and(|b| b == b"1");
        let mut entries = Vec::new();
        while let (Some(id), Some(frame)) = (it.next(), it.next()) {
            if let Ok(id) = text(&id).parse::<MessageId>() {
                entries.push((id, Bytes::from(frame)));
            }
        }
        let complete = match since {
            None => true,
            Some(since) => {
                !cut && since >= max_deleted && since <= last_id.unwrap_or(MessageId::ZERO)
            }
        };
        Ok(Replay {
            entries,
            state: RoomState { epoch, last_id },
            complete,
        })
    }
}

impl RedisBroker {
    /// The keys and arguments of the publish scripts for one entry
    /// ([`scripts::publish_entry`]; the keyed one adds its key and lifetime).
    fn publish_keys_args(&self, room: &str, entry: &StoredEntry) -> (Vec<String>, Vec<Vec<u8>>) {
        let keys = &self.link.keys;
        let rules = self.link.policy.rules(room);
        let args = [
            entry.kind.as_str().as_bytes().to_vec(),
            entry.body.as_bytes().to_vec(),
            rules.history_len.to_string().into_bytes(),
            self.link.ttl_s(room).to_string().into_bytes(),
            keys.channel(&Channel::Room(room.to_owned())).into_bytes(),
            fresh_epoch().into_bytes(),
        ];
        (
            vec![keys.history(room), keys.room_meta(room), keys.store_epoch()],
            args.to_vec(),
        )
    }

    /// Stores and publishes `entries` in one pipeline, so Redis runs the scripts in
    /// this order whatever else shares the connection; each keeps its own outcome.
    async fn publish_pipelined(&self, entries: &[(&str, &StoredEntry)]) -> Vec<Result<MessageId>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (room, entry) in entries {
            let (keys, args) = self.publish_keys_args(room, entry);
            pipe.cmd("EVALSHA")
                .arg(self.publish.get_hash())
                .arg(keys.len())
                .arg(keys)
                .arg(args);
        }
        let answers = match self
            .link
            .with_conn(|mut c| async move {
                pipe.query_async::<Vec<redis::RedisResult<String>>>(&mut c)
                    .await
            })
            .await
        {
            Ok(answers) if answers.len() == entries.len() => answers,
            Ok(_) => {
                let e = Error::Unavailable("redis answered a pipeline short".into());
                return entries.iter().map(|_| Err(e.clone())).collect();
            }
            Err(e) => return entries.iter().map(|_| Err(e.clone())).collect(),
        };
        let no_script = |a: &redis::RedisResult<String>| matches!(a, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript));
        if answers.iter().any(no_script) {
            // The script cache was flushed under a live connection: those publishes
            // are refused (nothing stored), and the script is loaded for the next.
            self.link.reload_publish_script().await;
        }
        answers
            .into_iter()
            .map(|a| parse_id(&a.map_err(crate::redis_link::unavailable)?))
            .collect()
    }
}

/// A stream id as Redis returned it.
fn parse_id(id: &str) -> Result<MessageId> {
    id.parse()
        .map_err(|_| Error::Unavailable(format!("redis returned a bad id {id:?}")))
}

#[async_trait]
impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn subscribe(&self, channel: &Channel) -> Result<()> {
        self.pubsub.subscribe(channel).await
    }

    async fn unsubscribe(&self, channel: &Channel) -> Result<()> {
        self.pubsub.unsubscribe(channel).await;
        Ok(())
    }

    async fn publish_entry(&self, room: &str, entry: &StoredEntry) -> Result<MessageId> {
        self.publish_pipelined(&[(room, entry)])
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::Unavailable("no answer from redis".into())))
    }

    async fn publish_entries(&self, entries: &[(String, StoredEntry)]) -> Vec<Result<MessageId>> {
        let refs: Vec<(&str, &StoredEntry)> =
            entries.iter().map(|(r, e)| (r.as_str(), e)).collect();
        self.publish_pipelined(&refs).await
    }

    async fn publish_entry_once(
        &self,
        room: &str,
        entry: &StoredEntry,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<(MessageId, bool)> {
        let (mut keys, args) = self.publish_keys_args(room, entry);
        keys.push(self.link.keys.idempotency(key));
        let (id, fresh): (String, i64) = self
            .link
            .with_conn(|mut c| async move {
                self.publish_once
                    .key(keys)
                    .arg(args)
                    .arg(ttl.as_secs().max(1))
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok((parse_id(&id)?, fresh == 1))
    }

    async fn publish_once(
        &self,
        channel: &Channel,
        frame: Bytes,
        key: &str,
        ttl: std::time::Duration,
    ) -> Result<bool> {
        let keys = &self.link.keys;
        let fresh: i64 = self
            .link
            .with_conn(|mut c| async move {
                self.publish_frame_once
                    .key(keys.idempotency(key))
                    .arg(ttl.as_secs().max(1))
                    .arg(keys.channel(channel))
                    .arg(frame.as_ref())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(fresh == 1)
    }

    async fn publish(&self, channel: &Channel, frame: Bytes) -> Result<()> {
        let name = self.link.keys.channel(channel);
        self.link
            .with_conn(|mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(name)
                    .arg(frame.as_ref())
                    .query_async::<()>(&mut c)
                    .await
            })
            .await
    }

    async fn room_state(&self, room: &str) -> Result<RoomState> {
        Ok(self.replay_raw(room, None, 0).await?.state)
    }

    async fn replay(&self, room: &str, since: MessageId, max_bytes: usize) -> Result<Replay> {
        self.replay_raw(room, Some(since), max_bytes).await
    }

    async fn history(
        &self,
        room: &str,
        before: Option<MessageId>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<HistoryPage> {
        let key = self.link.keys.history(room);
        let out: Vec<Vec<u8>> = self
            .link
            .with_conn(|mut c| async move {
                self.history
                    .key(key)
                    .arg(before.map(|b| b.to_string()).unwrap_or_default())
                    .arg(limit)
                    .arg(max_bytes)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let mut it = out.into_iter();
        let more = it.next().is_some_and(|b| b == b"1");
        let mut frames: Vec<Bytes> = it.map(Bytes::from).collect();
        frames.reverse();
        Ok(HistoryPage { frames, more })
    }

    async fn ping(&self) -> Result<()> {
        if !self.is_up() {
            return Err(Error::Unavailable("redis pub/sub is disconnected".into()));
        }
        self.link
            .with_conn(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }
}
