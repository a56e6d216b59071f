//! [`Burst`]: the writer feeding one taken batch into the socket.

use futures_util::Sink;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

use super::{track, track_stored, Delivered};
use crate::queue::Outbound;

/// Feeds a taken batch into the sink and flushes it: what an `async` loop over
/// [`super::feed`] does, written by hand because its state is a quarter of the size (an
/// idle writer task carries room for it all its life; ~330 bytes as `async`).
pub(super) struct Burst<'a, S> {
    pub(super) sink: &'a mut S,
    pub(super) items: std::vec::Drain<'a, Outbound>,
    /// The frames of a `Batch` item not yet fed.
    pub(super) inner: std::vec::IntoIter<Utf8Bytes>,
    /// A message the sink was not ready for.
    pub(super) pending: Option<Message>,
    pub(super) delivered: &'a mut Delivered,
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
                        track_stored(this.delivered, &f, &at);
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
