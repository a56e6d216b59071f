//! [`RedisOnline`]: the sessions of each user across a cluster, in Redis: a hash per
//! user (`P:user-sessions:{u:USER}`, session → node) and, for the reaper, an index per
//! node of the users it has sessions of (`P:node-users:…`, in the user's slot on a
//! cluster, like the node's room indexes). Removing a user's last session records
//! `user_offline` in the same script; [`reap_users`] does the same for a dead node.

use std::sync::Arc;

use async_trait::async_trait;
use redis::Script;

use crate::error::Result;
use crate::online::Online;
use crate::outbox_redis::RedisRecorder;
use crate::presence::SessionRef;
use crate::redis_link::RedisLink;
use crate::scripts_webhooks;

/// Online counts in Redis.
pub struct RedisOnline {
    /// The command connection.
    link: Arc<RedisLink>,
    /// What is recorded.
    recorder: Arc<RedisRecorder>,
    /// Counts a session.
    connect: Script,
    /// Stops counting one.
    disconnect: Script,
}

impl RedisOnline {
    /// Online counts over `link`.
    pub fn new(link: Arc<RedisLink>, recorder: Arc<RedisRecorder>) -> Self {
        RedisOnline {
            link,
            recorder,
            connect: Script::new(scripts_webhooks::ONLINE_CONNECT),
            disconnect: Script::new(&scripts_webhooks::online_disconnect()),
        }
    }
}

#[async_trait]
impl Online for RedisOnline {
    async fn connect(&self, session: &SessionRef) -> Result<()> {
        let (keys, node) = (&self.link.keys, &self.link.settings.node_id);
        let user = &session.user.user_id;
        let sessions = keys.user_sessions(user);
        self.link.note_slot_of(&sessions).await?;
        let index = keys.node_users(node, user);
        self.link
            .with_conn(|mut c| async move {
                self.connect
                    .key(sessions)
                    .key(index)
                    .arg(&session.session_id)
                    .arg(node)
                    .arg(user)
                    .invoke_async::<i64>(&mut c)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn disconnect(&self, session: &SessionRef) -> Result<bool> {
        let (keys, node) = (&self.link.keys, &self.link.settings.node_id);
        let user = &session.user.user_id;
        let outbox = &keys.webhooks_of_user(user);
        let r = &self.recorder;
        let reply: Vec<i64> = self
            .link
            .with_conn(|mut c| async move {
                self.disconnect
                    .key(keys.user_sessions(user))
                    .key(keys.node_users(node, user))
                    .key(outbox)
                    .arg(&session.session_id)
                    .arg(user)
                    .arg(r.mask())
                    .arg(r.max_len())
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let at = |i: usize| reply.get(i).copied().unwrap_or(0);
        r.recorded(outbox, at(1), at(2)).await;
        Ok(at(0) == 1)
    }
}

/// Removes a dead `node`'s sessions of every user in its user index `index`, recording
/// `user_offline` where they were a user's last, then deletes the index.
///
/// # Errors
/// [`crate::Error::Unavailable`]: the index stays, and the next reap goes on.
pub async fn reap_users(
    link: &RedisLink,
    recorder: &RedisRecorder,
    node: &str,
    index: &str,
) -> Result<()> {
    let keys = &link.keys;
    let users: Vec<String> = link
        .with_conn(|mut c| async move { redis::cmd("HKEYS").arg(index).query_async(&mut c).await })
        .await?;
    let reap = Script::new(&scripts_webhooks::online_reap());
    for user in users {
        let outbox = keys.webhooks_of_user(&user);
        let reply: Vec<i64> = link
            .with_conn(|mut c| {
                let mut call = reap.key(keys.user_sessions(&user));
                call.key(&outbox)
                    .arg(node)
                    .arg(&user)
                    .arg(recorder.mask())
                    .arg(recorder.max_len());
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        let at = |i: usize| reply.get(i).copied().unwrap_or(0);
        recorder.recorded(&outbox, at(1), at(2)).await;
    }
    link.with_conn(
        |mut c| async move { redis::cmd("DEL").arg(index).query_async::<()>(&mut c).await },
    )
    .await
}
