//! The hub's side of a broker gap: while the node's Pub/Sub link was down, frames
//! published to its rooms never reached it. Every room then holds its live frames
//! ([`Hub::hold_all`]) until the node's gap repair has read what the room's
//! stream holds after the room's mark and handed it over ([`Hub::finish_refill`]):
//! the refilled frames first, then the held ones minus what the refill already gave,
//! so every member gets every stored frame once, in order, without reconnecting.
//! Where the stream does not reach back, the members get `resync` instead.

use tokio_tungstenite::tungstenite::Utf8Bytes;
use wsgate_broker::RoomState;
use wsgate_protocol::server::ServerFrame;
use wsgate_protocol::MessageId;

use super::{Fanout, Held, Hub, Mark, PendingCap, Room};
use crate::handle::SlowConsumer;
use crate::queue::Outbound;

/// Where a room's refill starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapStart {
    /// The room is not held for this gap any more (emptied, or a later gap holds it).
    Stale,
    /// No join of the room has finished: nothing says where its members stand.
    Unknown,
    /// After this id, in this epoch.
    From(Mark),
}

/// What the repair read for a room.
#[derive(Debug)]
pub enum Refill {
    /// The stream reaches back to the mark, in the same epoch: the stored frames
    /// after it, oldest first.
    Entries(Vec<(MessageId, Utf8Bytes)>),
    /// It does not (trimmed past the mark, or a new epoch), or the mark is unknown:
    /// the members reload the room, which stands at this state.
    Resync(RoomState),
}

/// What [`Hub::finish_refill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The room is live again.
    Live(Fanout),
    /// The refill was handed over, but live frames overflowed the hold meanwhile:
    /// the room stays held, and the repair must read again from the new mark.
    ReadAgain,
    /// Nothing to do: [`GapStart::Stale`].
    Stale,
}

impl Held {
    /// An empty hold for `gap`.
    fn new(gap: u64) -> Self {
        Held {
            gap,
            frames: Vec::new(),
            bytes: 0,
            overflowed: false,
        }
    }

    /// Holds `frame`, or notes that the bound was passed.
    pub(super) fn push(&mut self, frame: &Utf8Bytes, cap: PendingCap) {
        if self.overflowed
            || self.frames.len() >= cap.frames
            || self.bytes + frame.len() > cap.bytes
        {
            self.overflowed = true;
            return;
        }
        self.bytes += frame.len();
        self.frames.push(frame.clone());
    }
}

impl Hub {
    /// The broker's link is down: every room holds its live frames until it is
    /// refilled. Returns the gap's number.
    pub fn hold_all(&self) -> u64 {
        let mut st = self.lock();
        st.gap += 1;
        let gap = st.gap;
        for room in st.rooms.values_mut() {
            match &mut room.held {
                // Still held from an earlier gap: what it holds is newer than the
                // mark, and is read again or dropped as a duplicate.
                Some(held) => held.gap = gap,
                None => room.held = Some(Held::new(gap)),
            }
        }
        gap
    }

    /// The rooms held for `gap`.
    pub fn held_rooms(&self, gap: u64) -> Vec<String> {
        let st = self.lock();
        st.rooms
            .iter()
            .filter(|(_, r)| r.held.as_ref().is_some_and(|h| h.gap == gap))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Where `room`'s refill for `gap` starts.
    pub fn gap_start(&self, room: &str, gap: u64) -> GapStart {
        let st = self.lock();
        match st.rooms.get(room) {
            Some(r) if r.held.as_ref().is_some_and(|h| h.gap == gap) => match &r.mark {
                Some(mark) => GapStart::From(mark.clone()),
                None => GapStart::Unknown,
            },
            _ => GapStart::Stale,
        }
    }

    /// Hands `refill` to `room`'s members, then what the room held, and makes it
    /// live (unless the hold overflowed meanwhile: [`Finished::ReadAgain`]).
    pub fn finish_refill(&self, room: &str, gap: u64, refill: Refill) -> Finished {
        // Declared before the lock: dropped after it, waking the writers of every
        // frame below at once.
        let mut wakes = crate::queue::Wakes::default();
        let mut st = self.lock();
        let Some(entry) = st.rooms.get_mut(room) else {
            return Finished::Stale;
        };
        let held = match entry.held.take() {
            Some(held) if held.gap == gap => held,
            other => {
                entry.held = other;
                return Finished::Stale;
            }
        };
        let mut out = Fanout::default();
        match refill {
            Refill::Entries(entries) => {
                for (_, frame) in &entries {
                    entry.deliver(frame, &mut out, &mut wakes);
                }
                // Live frames the refill already held are dropped, once, by id.
                entry.skip_through = entry.mark.as_ref().map(|m| m.id);
                if held.overflowed {
                    // Stored frames past the bound are read again from the stream;
                    // unstored ones (presence, typing) in the hold are lost.
                    entry.held = Some(Held::new(gap));
                    return Finished::ReadAgain;
                }
            }
            Refill::Resync(state) => entry.resync(room, &state, &mut out),
        }
        for frame in &held.frames {
            entry.deliver(frame, &mut out, &mut wakes);
        }
        Finished::Live(out)
    }
}

impl Room {
    /// Tells every member to reload the room, and moves the mark to `state`: stored
    /// frames up to its newest id are what the reload gets, and are not delivered.
    fn resync(&mut self, name: &str, state: &RoomState, out: &mut Fanout) {
        let frame = Utf8Bytes::from(
            ServerFrame::Resync {
                room: name.to_owned(),
                epoch: state.epoch.clone(),
                last_id: state.last_id.map(|i| i.to_string()),
            }
            .encode(),
        );
        for m in self.members.values_mut() {
            match &mut m.pending {
                None => {
                    m.skip_through = None;
                    match m.handle.offer(Outbound::Frame(frame.clone())) {
                        Ok(()) => out.delivered += 1,
                        Err(SlowConsumer) => out.slow += 1,
                    }
                }
                // A join still being answered may have read the room before the gap:
                // it reloads too, after its `joined` (one small frame past the bound).
                Some(pending) => {
                    pending.push((None, frame.clone()));
                    m.pending_bytes += frame.len();
                    out.delivered += 1;
                }
            }
        }
        self.mark = Some(Mark {
            epoch: state.epoch.clone(),
            id: state.last_id.unwrap_or(MessageId::ZERO),
        });
        self.skip_through = state.last_id;
    }
}

#[cfg(test)]
mod tests;
