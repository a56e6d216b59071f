//! [`LocalRegistry`]: the registry of a node that is its own cluster (the embedded
//! broker). There is nobody to report to and nobody to reap.

use async_trait::async_trait;

use crate::error::Result;
use crate::registry::{ClusterStats, NodeReport, Registry};

/// The registry of a single node.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalRegistry;

#[async_trait]
impl Registry for LocalRegistry {
    async fn heartbeat(&self, _report: NodeReport) -> Result<bool> {
        Ok(false)
    }

    async fn cluster(&self) -> Result<Option<ClusterStats>> {
        Ok(None)
    }

    async fn deregister(&self) -> Result<()> {
        Ok(())
    }
}
