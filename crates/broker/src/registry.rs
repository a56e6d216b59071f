//! [`Registry`]: the nodes of a cluster, their liveness and totals, and the clean-up
//! of what a dead node left in presence. Implementations side by side:
//! [`crate::registry_memory`] (a single node: nothing to share) and
//! [`crate::registry_redis`].

use async_trait::async_trait;

use crate::error::Result;

/// What a node reports about itself to the cluster registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeReport {
    /// Open WebSocket connections on the node.
    pub connections: u64,
}

/// Totals over the live nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterStats {
    /// Ids of the nodes alive now (sorted).
    pub nodes: Vec<String>,
    /// Open connections over those nodes.
    pub connections: u64,
}

/// The cluster's node registry.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Called periodically (twice per heartbeat interval): keeps this node registered
    /// as alive, and removes from presence the sessions of nodes that stopped
    /// reporting (announcing `leave` where a user's last session went with them).
    ///
    /// Returns `true` when this node was not in the registry: at its first report, or
    /// after it was reaped while alive (a partition longer than a heartbeat interval)
    /// or the store lost its data. The node must then add its sessions to presence
    /// again.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn heartbeat(&self, report: NodeReport) -> Result<bool>;

    /// Totals over the cluster's live nodes; `None` for a single node.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn cluster(&self) -> Result<Option<ClusterStats>>;

    /// Removes this node from the registry (graceful shutdown).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`].
    async fn deregister(&self) -> Result<()>;
}
