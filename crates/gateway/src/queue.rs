//! [`Queue`]: a session's bounded send queue, and [`Outbound`], what it holds.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// An item of a session's send queue. The frame bytes are shared: cloning a
/// [`Utf8Bytes`] is a reference count, so one encoded frame serves every recipient.
#[derive(Debug)]
pub enum Outbound {
    /// One frame.
    Frame(Utf8Bytes),
    /// A stored room frame (`message`, `publish`) with where it stands in its room,
    /// read off the frame once by the hub instead of by every recipient's writer.
    Stored(Utf8Bytes, StoredAt),
    /// Frames that must go out together and in order (a join's replay), taking one
    /// queue slot so a long replay cannot overflow the queue by itself.
    Batch(Vec<Utf8Bytes>),
    /// A binary frame (the echo endpoint only: the protocol itself is text).
    Binary(bytes::Bytes),
}

impl Outbound {
    /// The bytes it holds (what it counts against the queue's byte bound).
    pub fn len(&self) -> usize {
        match self {
            Outbound::Frame(f) | Outbound::Stored(f, _) => f.len(),
            Outbound::Batch(fs) => fs.iter().map(|f| f.len()).sum(),
            Outbound::Binary(b) => b.len(),
        }
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A stored frame's id and the byte range of its room name in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredAt {
    /// The frame's id.
    pub id: wsgate_protocol::MessageId,
    /// Where the room name starts in the frame…
    pub room_start: u32,
    /// … and ends.
    pub room_end: u32,
}

impl StoredAt {
    /// Reads it off `frame` (`None` for a frame that is not a stored one).
    pub fn of(frame: &str) -> Option<StoredAt> {
        let (room, id) = wsgate_protocol::server::stored_at(frame)?;
        Some(StoredAt {
            id,
            room_start: u32::try_from(room.start).ok()?,
            room_end: u32::try_from(room.end).ok()?,
        })
    }

    /// The room name, in `frame` (the frame it was read from).
    pub fn room<'f>(&self, frame: &'f str) -> &'f str {
        frame
            .get(self.room_start as usize..self.room_end as usize)
            .unwrap_or_default()
    }
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
///
/// It is bounded twice: in items (`--send-queue`) and in bytes (`--send-queue-bytes`),
/// counting what is queued *and* what the consumer has taken but not yet written
/// (until it calls [`Queue::written`]), so one session holds at most the byte bound of
/// frames, whatever they are (a replay or a `history` reply counts its bytes). One item
/// larger than the bound is still taken when nothing else is held: the largest frame
/// the server makes is bounded by other means.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<QueueState>,
    /// Woken when a frame arrives in an empty queue, or the queue is closed.
    consumer: AtomicWaker,
    /// Woken when the consumer has taken or written frames (a producer waiting for room).
    space: AtomicWaker,
    /// Most items queued.
    capacity: usize,
    /// Most bytes held (queued plus taken and not yet written).
    max_bytes: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    items: VecDeque<Outbound>,
    /// Bytes of `items`.
    queued: usize,
    /// Bytes taken by the consumer and not yet reported written.
    in_flight: usize,
    closed: bool,
}

impl QueueState {
    fn fits(&self, capacity: usize, max_bytes: usize, len: usize) -> bool {
        let held = self.queued + self.in_flight;
        self.items.len() < capacity && (held == 0 || held + len <= max_bytes)
    }
}

/// Why [`Queue::push`] did not queue an item.
#[derive(Debug)]
pub enum PushError {
    /// The queue holds its capacity already.
    Full(Outbound),
    /// The queue is closed (its session is ending).
    Closed(Outbound),
}

/// Consumers whose queues a fan-out made non-empty, woken together once the
/// dispatcher has handed out every frame it had at hand ([`Wakes::wake_all`]).
///
/// This is how one socket write carries every frame of a burst: a writer woken at the
/// first frame of a batch of broker messages would write that frame alone, then the
/// next, one `write()` per frame per subscriber (the cost that dominated the cluster
/// profile); woken after the batch it takes them all and writes once, the way
/// uWebSockets drains each socket once per loop iteration. Dropping a `Wakes` wakes
/// what it holds: a deferred wake is never lost.
#[derive(Debug, Default)]
pub struct Wakes {
    wakers: Vec<Waker>,
}

impl Wakes {
    /// Wakes every consumer collected so far.
    pub fn wake_all(&mut self) {
        for w in self.wakers.drain(..) {
            w.wake();
        }
        if self.wakers.capacity() > WAKES_KEEP {
            self.wakers.shrink_to(WAKES_KEEP);
        }
    }

    /// Consumers waiting to be woken.
    pub fn len(&self) -> usize {
        self.wakers.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.wakers.is_empty()
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        self.wake_all();
    }
}

/// A [`Wakes`] keeps room for this many wakers between batches.
const WAKES_KEEP: usize = 4096;

/// A queue whose buffer grew past this many items gives it back once a take finds
/// it mostly unused (fewer than an eighth of its slots filled): traffic has calmed.
/// While bursts keep coming the buffer is kept, rather than shrunk after each and
/// grown again, copying, by the next (which showed in the fan-out profile).
const QUEUE_SHRINK_ABOVE: usize = 64;

impl Queue {
    /// An empty queue holding at most `capacity` items and `max_bytes` bytes.
    pub fn new(capacity: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::default(),
            consumer: AtomicWaker::new(),
            space: AtomicWaker::new(),
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
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
        if self.push_quietly(item)? {
            self.consumer.wake();
        }
        Ok(())
    }

    /// Queues `item` like [`Queue::push`], but a consumer to wake is added to `wakes`
    /// instead of being woken now.
    ///
    /// # Errors
    /// As [`Queue::push`].
    pub fn push_deferred(&self, item: Outbound, wakes: &mut Wakes) -> Result<(), PushError> {
        if self.push_quietly(item)? {
            // Taken out of the slot: a consumer that polls before the wake finds the
            // item anyway, and one that registers again is woken by the next push.
            if let Some(w) = self.consumer.take() {
                wakes.wakers.push(w);
            }
        }
        Ok(())
    }

    /// Queues `item`; `Ok(true)` when the queue was empty (its consumer must be woken).
    fn push_quietly(&self, item: Outbound) -> Result<bool, PushError> {
        let was_empty = {
            let mut st = self.lock();
            if st.closed {
                return Err(PushError::Closed(item));
            }
            let len = item.len();
            if !st.fits(self.capacity, self.max_bytes, len) {
                return Err(PushError::Full(item));
            }
            st.queued += len;
            st.items.push_back(item);
            st.items.len() == 1
        };
        Ok(was_empty)
    }

    /// Closes the queue: producers are refused; what is queued can still be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.consumer.wake();
        self.space.wake();
    }

    /// Closes the queue and drops what it holds: a session that ends without writing
    /// its backlog (a slow consumer) gives the memory back at once.
    pub fn close_and_clear(&self) {
        let dropped = {
            let mut st = self.lock();
            st.closed = true;
            st.queued = 0;
            std::mem::take(&mut st.items)
        };
        drop(dropped);
        self.consumer.wake();
        self.space.wake();
    }

    /// Gives the buffer back when nothing is queued (the writer calls it once per
    /// heartbeat: an idle connection then holds no queue buffer).
    pub fn release_idle(&self) {
        let mut st = self.lock();
        if st.items.is_empty() && st.items.capacity() > 0 {
            st.items = VecDeque::new();
        }
    }

    /// The consumer has written what it took: those bytes no longer count.
    pub fn written(&self) {
        self.lock().in_flight = 0;
        self.space.wake();
    }

    /// Bytes held now (queued, and taken but not yet written).
    pub fn bytes(&self) -> usize {
        let st = self.lock();
        st.queued + st.in_flight
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
        let taken = st.items.len();
        out.extend(st.items.drain(..));
        st.in_flight += st.queued;
        st.queued = 0;
        if st.items.capacity() > QUEUE_SHRINK_ABOVE && taken < st.items.capacity() / 8 {
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
        let mut st = self.lock();
        out.extend(st.items.drain(..));
        st.in_flight += st.queued;
        st.queued = 0;
    }

    /// Waits until the queue has room for an item of `len` bytes (or is closed). For a
    /// producer that may wait: the echo endpoint, whose only producer is its peer.
    pub async fn room_for(&self, len: usize) {
        std::future::poll_fn(|cx| {
            let st = self.lock();
            if st.closed || st.fits(self.capacity, self.max_bytes, len) {
                return Poll::Ready(());
            }
            self.space.register(cx.waker());
            Poll::Pending
        })
        .await
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

    /// Takes the oldest item, if any, without waiting (tests).
    pub fn try_pop(&self) -> Option<Outbound> {
        let mut st = self.lock();
        let item = st.items.pop_front()?;
        st.queued -= item.len();
        Some(item)
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
        let q = Queue::new(2, 1 << 20);
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
    async fn bytes_are_bounded_until_written() {
        let q = Queue::new(100, 10);
        q.push(frame("aaaa")).unwrap();
        q.push(frame("bbbb")).unwrap();
        assert!(
            matches!(q.push(frame("ccc")), Err(PushError::Full(_))),
            "4+4+3 > 10"
        );
        let mut out = Vec::new();
        assert!(q.take(&mut out).await);
        assert_eq!(q.bytes(), 8, "taken but not written still counts");
        assert!(matches!(q.push(frame("ccc")), Err(PushError::Full(_))));
        q.written();
        assert_eq!(q.bytes(), 0);
        // One item over the bound is taken when nothing else is held…
        q.push(frame("0123456789abcdef")).unwrap();
        // … and nothing after it.
        assert!(matches!(q.push(frame("x")), Err(PushError::Full(_))));
        q.close_and_clear();
        assert_eq!(q.bytes(), 0);
        out.clear();
        assert!(!q.take(&mut out).await, "cleared and closed");
    }

    #[tokio::test]
    async fn a_waiting_consumer_is_woken_by_a_push_from_another_task() {
        let q = Queue::new(8, 1 << 20);
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
            producer.room_for(1).await;
            producer.push(frame("x")).unwrap();
        }
        assert_eq!(task.await.unwrap(), 1000);
    }

    #[tokio::test]
    async fn a_deferred_push_wakes_the_consumer_only_with_the_batch() {
        let q = Queue::new(8, 1 << 20);
        let consumer = q.clone();
        let (woken_tx, mut woken) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut out = Vec::new();
            let mut rounds = Vec::new();
            while rounds.iter().sum::<usize>() < 5 {
                assert!(consumer.take(&mut out).await);
                rounds.push(out.len());
                out.clear();
                woken_tx.send(()).unwrap();
            }
            rounds
        });
        // Let the consumer register its waker on the empty queue.
        while q.consumer.take().map(|w| q.consumer.register(&w)).is_none() {
            tokio::task::yield_now().await;
        }
        let mut wakes = Wakes::default();
        for s in ["a", "b", "c"] {
            q.push_deferred(frame(s), &mut wakes).unwrap();
        }
        assert_eq!(wakes.len(), 1, "one consumer to wake, once");
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(woken.try_recv().is_err(), "not woken before the batch ends");
        wakes.wake_all();
        woken.recv().await.unwrap();
        // Dropping a `Wakes` wakes what it holds.
        {
            let mut wakes = Wakes::default();
            q.push_deferred(frame("d"), &mut wakes).unwrap();
            q.push_deferred(frame("e"), &mut wakes).unwrap();
        }
        assert_eq!(task.await.unwrap(), [3, 2], "each batch taken in one go");
    }
}
