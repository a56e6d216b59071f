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
use crate::redis_pubsub::Subscriber;
use crate::scripts;

/// The Redis broker of a cluster node.
pub struct RedisBroker {
    /// The command connection.
    link: Arc<RedisLink>,
    /// The Pub/Sub subscriptions.
    pubsub: Arc<dyn Subscriber>,
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
    pub fn new(link: Arc<RedisLink>, pubsub: Arc<dyn Subscriber>) -> Self {
        let script = |text: &str| Script::new(&link.keys.script(text));
        RedisBroker {
            publish: script(&scripts::publish_entry()),
            publish_once: script(&scripts::publish_entry_once()),
            publish_frame_once: script(scripts::PUBLISH_ONCE),
            replay: script(&scripts::replay()),
            history: script(&scripts::history()),
            link,
            pubsub,
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
                    .key(keys.store_epoch(room))
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
            vec![
                keys.history(room),
                keys.room_meta(room),
                keys.store_epoch(room),
            ],
            args.to_vec(),
        )
    }

    /// Stores and publishes `entries`, each keeping its own outcome, in their order.
    /// On one Redis that is one pipeline; on a cluster one pipeline per slot (a
    /// pipeline goes to one shard), all at once: a room's entries are in one of them,
    /// in order, and rooms are ordered each on its own.
    async fn publish_pipelined(&self, entries: &[(&str, &StoredEntry)]) -> Vec<Result<MessageId>> {
        if !self.link.keys.is_sharded() {
            return self.publish_pipeline(entries).await;
        }
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, (room, _)) in entries.iter().enumerate() {
            let slot = crate::slots::slot(&self.link.keys.history(room));
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        if groups.len() == 1 {
            return self.publish_pipeline(entries).await;
        }
        let answers = futures_util::future::join_all(groups.iter().map(|(_, members)| {
            let part: Vec<(&str, &StoredEntry)> = members.iter().map(|&i| entries[i]).collect();
            async move { self.publish_pipeline(&part).await }
        }))
        .await;
        let mut out: Vec<Option<Result<MessageId>>> = entries.iter().map(|_| None).collect();
        for ((_, members), results) in groups.iter().zip(answers) {
            for (&i, r) in members.iter().zip(results) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Unavailable("no answer from redis".into()))))
            .collect()
    }

    /// Stores and publishes `entries` (of one slot on a cluster) in one pipeline, so
    /// Redis runs the scripts in this order whatever else shares the connection. With
    /// `wait_replicas`, the pipeline ends with `WAIT`: publishes that replicas did not
    /// confirm in time are answered `unavailable` (a failover could lose them).
    async fn publish_pipeline(&self, entries: &[(&str, &StoredEntry)]) -> Vec<Result<MessageId>> {
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
        let wait = self.link.settings.wait_replicas;
        if wait > 0 {
            pipe.cmd("WAIT").arg(wait).arg(WAIT_MS);
        }
        let expected = entries.len() + usize::from(wait > 0);
        let mut answers = match self
            .link
            .with_conn(|mut c| async move {
                pipe.query_async::<Vec<redis::RedisResult<redis::Value>>>(&mut c)
                    .await
            })
            .await
        {
            Ok(answers) if answers.len() == expected => answers,
            Ok(_) => {
                let e = Error::Unavailable("redis answered a pipeline short".into());
                return entries.iter().map(|_| Err(e.clone())).collect();
            }
            Err(e) => return entries.iter().map(|_| Err(e.clone())).collect(),
        };
        let unconfirmed = (wait > 0)
            .then(|| answers.pop())
            .flatten()
            .is_some_and(|acks| !matches!(acks, Ok(redis::Value::Int(n)) if n >= i64::from(wait)));
        let no_script = |a: &redis::RedisResult<redis::Value>| matches!(a, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript));
        if answers.iter().any(no_script) {
            // The script cache was flushed under a live connection (or, on a cluster,
            // a replica without it took over): those publishes are refused (nothing
            // stored), and the script is loaded for the next.
            self.link.reload_publish_script().await;
        }
        answers
            .into_iter()
            .map(|a| {
                let id: String = a
                    .and_then(|v| redis::from_redis_value(v).map_err(Into::into))
                    .map_err(crate::redis_link::unavailable)?;
                if unconfirmed {
                    return Err(Error::Unavailable(format!(
                        "no {wait} replica confirmed {id} in time"
                    )));
                }
                parse_id(&id)
            })
            .collect()
    }
}

/// How long a publish waits for its replicas (`--redis-wait-replicas`).
const WAIT_MS: u64 = 500;

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
        keys.push(
            self.link
                .keys
                .idempotency(&Channel::Room(room.to_owned()), key),
        );
        // The script and, with replicas to wait for, `WAIT` in one pipeline (so, on a
        // cluster, on the room's shard); a shard without the script (`NOSCRIPT`: it did
        // not run) gets it loaded, then the pipeline again.
        let wait = self.link.settings.wait_replicas;
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(self.publish_once.get_hash())
            .arg(keys.len())
            .arg(&keys)
            .arg(&args)
            .arg(ttl.as_secs().max(1));
        if wait > 0 {
            pipe.cmd("WAIT").arg(wait).arg(WAIT_MS);
        }
        let text = self.link.keys.script(&scripts::publish_entry_once());
        let out: Vec<redis::Value> = self
            .link
            .with_conn(|mut c| async move {
                match pipe.query_async(&mut c).await {
                    Err(e)
                        if e.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        redis::cmd("SCRIPT")
                            .arg("LOAD")
                            .arg(text)
                            .query_async::<redis::Value>(&mut c)
                            .await?;
                        pipe.query_async(&mut c).await
                    }
                    other => other,
                }
            })
            .await?;
        let mut out = out.into_iter();
        let value = |v: Option<redis::Value>| {
            v.ok_or_else(|| Error::Unavailable("redis answered a pipeline short".into()))
        };
        let (id, fresh): (String, i64) =
            redis::from_redis_value(value(out.next())?).map_err(crate::redis_link::unavailable)?;
        if wait > 0 {
            let acks: i64 = redis::from_redis_value(value(out.next())?)
                .map_err(crate::redis_link::unavailable)?;
            if acks < i64::from(wait) {
                return Err(Error::Unavailable(format!(
                    "no {wait} replica confirmed {id} in time"
                )));
            }
        }
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
                    .key(keys.idempotency(channel, key))
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
        let command = self.link.keys.publish_command();
        self.link
            .with_conn(|mut c| async move {
                redis::cmd(command)
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
