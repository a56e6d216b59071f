//! [`Queue`]: a session's bounded send queue, and [`Outbound`], what it holds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// An item of a session's send queue. The frame bytes are shared: cloning a
/// [`Utf8Bytes`] is a reference count, so one encoded frame serves every recipient.
#[derive(Debug)]
pub enum Outbound {
    /// One frame.
    Frame(Utf8Bytes),
    /// Frames that must go out together and in order (a join's replay), taking one
    /// queue slot so a long replay cannot overflow the queue by itself.
    Batch(Vec<Utf8Bytes>),
    /// A binary frame (the echo endpoint only: the protocol itself is text).
    Binary(bytes::Bytes),
}

/// A session's bounded send queue: many producers (fan-out, the session's own
/// replies), one consumer (its writer, or the SSE body task).
///
/// Lighter than a tokio `mpsc` channel for this job: nothing is allocated until the
/// first frame (a channel allocates a 32-slot block and a cache-padded header per
/// connection, ~1.6 KiB), there is no semaphore to acquire per frame, a producer wakes
/// the consumer only when it finds the queue empty (a consumer that has not emptied
/// it yet will see the frame anyway), and the consumer takes everything queued in one
/// lock, which is what a writer that flushes once per burst wants.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<QueueState>,
    /// Woken when a frame arrives in an empty queue, or the queue is closed.
    consumer: AtomicWaker,
    /// Woken when the consumer has taken frames (a producer waiting for room).
    space: AtomicWaker,
    capacity: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Outbound>,
    closed: bool,
}

/// Why [`Queue::push`] did not queue an item.
#[derive(Debug)]
pub enum PushError {
    /// The queue holds its capacity already.
    Full(Outbound),
    /// The queue is closed (its session is ending).
    Closed(Outbound),
}

/// After a burst, a queue whose buffer grew past this many items gives it back.
const QUEUE_SHRINK_ABOVE: usize = 64;

impl Queue {
    /// An empty queue holding at most `capacity` items.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::default(),
            consumer: AtomicWaker::new(),
            space: AtomicWaker::new(),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `item` without waiting.
    ///
    /// # Errors
    /// [`PushError::Full`] at capacity, [`PushError::Closed`] after [`Queue::close`].
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        let was_empty = {
            let mut st = self.lock();
            if st.closed {
                return Err(PushError::Closed(item));
            }
            if st.items.len() >= self.capacity {
                return Err(PushError::Full(item));
            }
            st.items.push_back(item);
            st.items.len() == 1
        };
        if was_empty {
            self.consumer.wake();
        }
        Ok(())
    }

    /// Closes the queue: producers are refused; what is queued can still be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.consumer.wake();
        self.space.wake();
    }

    /// Moves every queued item into `out`; `Ready(false)` once the queue is closed and
    /// empty.
    pub fn poll_take(&self, cx: &mut Context<'_>, out: &mut Vec<Outbound>) -> Poll<bool> {
        let mut st = self.lock();
        if st.items.is_empty() {
            if st.closed {
                return Poll::Ready(false);
            }
            // Registered under the lock: a producer that pushes after this sees an
            // empty queue and wakes us.
            self.consumer.register(cx.waker());
            return Poll::Pending;
        }
        out.extend(st.items.drain(..));
        if st.items.capacity() > QUEUE_SHRINK_ABOVE {
            st.items.shrink_to(QUEUE_SHRINK_ABOVE / 4);
        }
        drop(st);
        self.space.wake();
        Poll::Ready(true)
    }

    /// Waits for items and moves all of them into `out`; `false` once the queue is
    /// closed and empty.
    pub async fn take(&self, out: &mut Vec<Outbound>) -> bool {
        std::future::poll_fn(|cx| self.poll_take(cx, out)).await
    }

    /// Takes every item queued now, without waiting.
    pub fn take_now(&self, out: &mut Vec<Outbound>) {
        out.extend(self.lock().items.drain(..));
    }

    /// Waits until the queue has room for one more item (or is closed). For a
    /// producer that may wait: the echo endpoint, whose only producer is its peer.
    pub async fn room(&self) {
        self.wait_below(self.capacity).await
    }

    /// Waits until fewer than `limit` items are queued (or the queue is closed).
    pub async fn wait_below(&self, limit: usize) {
        std::future::poll_fn(|cx| {
            let st = self.lock();
            if st.closed || st.items.len() < limit {
                return Poll::Ready(());
            }
            self.space.register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The most items the queue holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Takes the oldest item, if any, without waiting.
    pub fn try_pop(&self) -> Option<Outbound> {
        self.lock().items.pop_front()
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Utf8Bytes;

    fn frame(s: &'static str) -> Outbound {
        Outbound::Frame(Utf8Bytes::from_static(s))
    }

    #[tokio::test]
    async fn a_queue_keeps_order_refuses_past_capacity_and_drains_after_close() {
        let q = Queue::new(2);
        q.push(frame("a")).unwrap();
        q.push(frame("b")).unwrap();
        assert!(matches!(q.push(frame("c")), Err(PushError::Full(_))));
        let mut out = Vec::new();
        assert!(q.take(&mut out).await);
        let texts: Vec<String> = out
            .iter()
            .map(|o| match o {
                Outbound::Frame(f) => f.to_string(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(texts, ["a", "b"]);
        q.push(frame("d")).unwrap();
        q.close();
        assert!(matches!(q.push(frame("e")), Err(PushError::Closed(_))));
        out.clear();
        assert!(
            q.take(&mut out).await,
            "what was queued before close is kept"
        );
        assert_eq!(out.len(), 1);
        out.clear();
        assert!(!q.take(&mut out).await);
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_woken_by_a_push_from_another_task() {
        let q = Queue::new(8);
        let producer = q.clone();
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut n = 0;
            while q.take(&mut out).await {
                n += out.len();
                out.clear();
                if n == 1000 {
                    break;
                }
            }
            n
        });
        for _ in 0..1000 {
            producer.room().await;
            producer.push(frame("x")).unwrap();
        }
        assert_eq!(task.await.unwrap(), 1000);
    }
}
