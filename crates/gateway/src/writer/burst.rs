//! [`Burst`]: the writer feeding one taken batch into the socket.

use futures_util::Sink;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::{track, track_at, Delivered};
use crate::queue::Outbound;

/// Feeds taken frames into the sink, recording the stored ones in `delivered`, and
/// flushes: written by hand rather than as an `async` loop because its state is a
/// quarter of the size (an idle writer task carries room for it all its life; ~330
/// bytes as `async`). The writer's bursts and its drain at shutdown both use it.
pub(super) struct Burst<'a, S> {
    sink: &'a mut S,
    items: std::vec::Drain<'a, Outbound>,
    /// The frames of a `Batch` item not yet fed.
    inner: std::vec::IntoIter<Utf8Bytes>,
    /// A message the sink was not ready for.
    pending: Option<Message>,
    delivered: &'a mut Delivered,
}

impl<'a, S> Burst<'a, S> {
    /// Feeds `items` into `sink`.
    pub(super) fn new(
        sink: &'a mut S,
        items: std::vec::Drain<'a, Outbound>,
        delivered: &'a mut Delivered,
    ) -> Self {
        Burst {
            sink,
            items,
            inner: Vec::new().into_iter(),
            pending: None,
            delivered,
        }
    }
}

impl<S> std::future::Future for Burst<'_, S>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    type Output = Result<(), WsError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if let Some(msg) = this.pending.take() {
                match std::pin::Pin::new(&mut *this.sink).poll_ready(cx) {
                    Poll::Pending => {
                        this.pending = Some(msg);
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => std::pin::Pin::new(&mut *this.sink).start_send(msg)?,
                }
            }
            let next = match this.inner.next() {
                Some(f) => {
                    track(this.delivered, &f);
                    Message::Text(f)
                }
                None => match this.items.next() {
                    Some(Outbound::Frame(f)) => {
                        track(this.delivered, &f);
                        Message::Text(f)
                    }
                    Some(Outbound::Stored(f, at)) => {
                        track_at(this.delivered, at.room(f.as_str()), at.id);
                        Message::Text(f)
                    }
                    Some(Outbound::Binary(b)) => Message::Binary(b),
                    Some(Outbound::Batch(frames)) => {
                        this.inner = frames.into_iter();
                        continue;
                    }
                    None => break,
                },
            };
            this.pending = Some(next);
        }
        std::pin::Pin::new(&mut *this.sink).poll_flush(cx)
    }
}
