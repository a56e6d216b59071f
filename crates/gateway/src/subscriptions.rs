//! Node-level broker subscriptions: the first local user of a channel subscribes
//! the node; after the last one goes, the node unsubscribes later, and only if no one
//! came back meanwhile, so a quick leave and rejoin does not churn the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wsgate_broker::{Broker, Channel, Result};

/// Subscription state per channel.
pub struct Subscriptions {
    /// The broker subscribed through.
    broker: Arc<dyn Broker>,
    /// One async lock per channel serialises its subscribe and unsubscribe calls;
    /// the bool says whether the node is subscribed. The outer std mutex is held
    /// only to find or create an entry.
    channels: Mutex<HashMap<Channel, Arc<tokio::sync::Mutex<bool>>>>,
}

impl Subscriptions {
    /// No subscriptions yet.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Subscriptions {
            broker,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn entry(&self, channel: &Channel) -> Arc<tokio::sync::Mutex<bool>> {
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(channel.clone()).or_default().clone()
    }

    /// Makes sure the node is subscribed to `channel`; returns once it is, so that
    /// what is published afterwards reaches the node.
    ///
    /// # Errors
    /// The broker's error when it cannot subscribe.
    pub async fn ensure(&self, channel: &Channel) -> Result<()> {
        let entry = self.entry(channel);
        let mut subscribed = entry.lock().await;
        if !*subscribed {
            self.broker.subscribe(channel).await?;
            *subscribed = true;
        }
        Ok(())
    }

    /// Unsubscribes from `channel` unless `still_needed` says a local session came
    /// back. The check runs under the channel's lock, after any concurrent
    /// [`Subscriptions::ensure`], so it cannot undo a fresh subscription.
    ///
    /// # Errors
    /// The broker's error when it cannot unsubscribe.
    pub async fn release_if_unused(
        &self,
        channel: &Channel,
        still_needed: impl Fn() -> bool,
    ) -> Result<()> {
        let entry = self.entry(channel);
        let mut subscribed = entry.lock().await;
        if *subscribed && !still_needed() {
            self.broker.unsubscribe(channel).await?;
            *subscribed = false;
        }
        let unused = !*subscribed;
        drop(subscribed);
        if unused {
            let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            // Drop the entry unless someone else holds it right now.
            if map.get(channel).is_some_and(|e| Arc::strong_count(e) <= 2) {
                map.remove(channel);
            }
        }
        Ok(())
    }
}
