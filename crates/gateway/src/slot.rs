//! Connection slots: `--max-connections` per node and `--max-connections-per-ip` per
//! client address, taken before a session starts and given back when it ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::{header, HeaderValue, Response, StatusCode};

use crate::response::{error_response, Body};

/// A connection's place among the `--max-handshakes` HTTP connections that are not
/// sessions: taken at accept, held while it waits for request headers, serves plain
/// requests or idles between kept-alive ones, and given back when it becomes a
/// session (a WebSocket or an SSE stream, counted by [`Slot`]s instead) or closes.
#[derive(Clone, Default)]
pub struct HttpPermit(Arc<Mutex<Option<tokio::sync::OwnedSemaphorePermit>>>);

impl HttpPermit {
    /// Holds `permit` for the connection.
    pub fn new(permit: tokio::sync::OwnedSemaphorePermit) -> Self {
        HttpPermit(Arc::new(Mutex::new(Some(permit))))
    }

    /// Gives the place back (the connection became a session).
    pub fn release(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// The node's connection counts.
pub struct Capacity {
    /// Most sessions (WebSocket and SSE) at once.
    max: usize,
    /// Most sessions per client address (0: no limit).
    max_per_ip: usize,
    /// Open sessions, counted from the accepted handshake.
    active: AtomicUsize,
    /// Sessions per client address (only with a per-address limit). A std mutex:
    /// held for one map update.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A reserved connection slot, released when dropped.
pub struct Slot {
    /// The counts it holds a place in.
    capacity: Arc<Capacity>,
    /// The client address counted against the per-address limit, if any.
    client: Option<IpAddr>,
}

/// Why a connection slot was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefused {
    /// The node holds `--max-connections` already (503).
    Node,
    /// The client's address holds `--max-connections-per-ip` already (429).
    Address,
}

impl Capacity {
    /// Room for `max` sessions, `max_per_ip` per address (0: no per-address limit).
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Capacity {
            max,
            max_per_ip,
            active: AtomicUsize::new(0),
            per_ip: Mutex::default(),
        })
    }

    /// Open sessions now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Reserves a slot for a client at `client`, or says which limit was reached.
    ///
    /// # Errors
    /// [`SlotRefused`] naming the limit.
    pub fn reserve(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Slot, SlotRefused> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map_err(|_| SlotRefused::Node)?;
        let mut slot = Slot {
            capacity: self.clone(),
            client: None,
        };
        if let (Some(ip), true) = (client, self.max_per_ip > 0) {
            let mut counts = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                return Err(SlotRefused::Address);
            }
            *n += 1;
            slot.client = Some(ip);
        }
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.capacity.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.client {
            let mut counts = self
                .capacity
                .per_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(n) = counts.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

impl SlotRefused {
    /// The HTTP refusal: status, contract error code, message, `Retry-After` seconds.
    pub fn response(self) -> Response<Body> {
        let (status, code, message, retry) = match self {
            SlotRefused::Node => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "this node is at capacity",
                "1",
            ),
            SlotRefused::Address => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many connections from this address",
                "5",
            ),
        };
        let mut res = error_response(status, code, message);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(retry));
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_node_and_per_address_and_release_on_drop() {
        let cap = Capacity::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = cap.reserve(Some(a)).unwrap();
        let s2 = cap.reserve(Some(a)).unwrap();
        assert_eq!(cap.reserve(Some(a)).err(), Some(SlotRefused::Address));
        let s3 = cap.reserve(Some(b)).unwrap();
        assert_eq!(cap.reserve(None).err(), Some(SlotRefused::Node));
        assert_eq!(cap.active(), 3);
        drop((s1, s2, s3));
        assert_eq!(cap.active(), 0);
        assert!(cap.reserve(Some(a)).is_ok());
    }
}
