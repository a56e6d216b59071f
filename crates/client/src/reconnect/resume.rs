//! Resuming rooms exactly, without I/O: per room, the last id seen and the history
//! epoch (for the `join` that resumes it), which live frames were already handed over
//! (ids compare numerically, within one epoch), and what a `resync`'s reload covers.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{json, Value};

/// A message id `"<ms>-<seq>"` as `(ms, seq)`, or `None` when it is not one.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Compares two message ids numerically (`"9-0"` < `"10-0"`), not as strings; `None`
/// when either is not an id.
pub fn compare_ids(a: &str, b: &str) -> Option<Ordering> {
    Some(parse_id(a)?.cmp(&parse_id(b)?))
}

/// What to do with a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the application.
    Deliver,
    /// A room frame whose id was already handed over (or covered by a reload): drop it.
    Duplicate,
}

/// Where the client is in one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Room {
    /// The newest id seen (or the position a `joined`/`resync` gave).
    last_id: Option<String>,
    /// The history epoch of the last `joined` or `resync`.
    epoch: Option<String>,
    /// A `join` is out and its `joined` has not come: frames replayed meanwhile belong
    /// to the room's current epoch, maybe not ours, so they are not compared.
    joining: bool,
    /// A `resync`'s reload is awaited; it covers ids up to this one (`None`: nothing,
    /// the room's history was empty).
    reload: Option<Option<String>>,
}

impl Room {
    /// A live room frame with `id`.
    fn seen(&mut self, id: &str) -> Verdict {
        if parse_id(id).is_none() {
            return Verdict::Deliver;
        }
        if !self.joining {
            let old = self
                .last_id
                .as_deref()
                .and_then(|last| compare_ids(id, last))
                .is_some_and(|o| o != Ordering::Greater);
            if old {
                return Verdict::Duplicate;
            }
        }
        self.last_id = Some(id.to_owned());
        Verdict::Deliver
    }
}

/// Where the client is in each joined room, to resume it exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    rooms: BTreeMap<String, Room>,
}

impl Resume {
    /// Notes what a client frame means for resuming (`join`, `leave`).
    pub fn on_sent(&mut self, frame: &Value) {
        let room = frame["room"].as_str();
        match (frame["type"].as_str(), room) {
            (Some("join"), Some(room)) => {
                self.rooms.entry(room.to_owned()).or_default().joining = true;
            }
            (Some("leave"), Some(room)) => {
                self.rooms.remove(room);
            }
            _ => {}
        }
    }

    /// Notes what a server frame tells (ids of stored frames, the position and epoch
    /// of `joined` and `resync`) and says whether to hand it on: a live `message` or
    /// `publish` of a room whose id is not newer than the newest already seen (or
    /// reloaded) is a [`Verdict::Duplicate`].
    pub fn on_received(&mut self, frame: &Value) -> Verdict {
        let Some(room) = frame["room"].as_str() else {
            return Verdict::Deliver;
        };
        let Some(entry) = self.rooms.get_mut(room) else {
            return Verdict::Deliver;
        };
        match frame["type"].as_str() {
            Some("message" | "publish") => {
                if let Some(id) = frame["id"].as_str() {
                    return entry.seen(id);
                }
            }
            Some("joined") => {
                entry.joining = false;
                entry.epoch = frame["epoch"].as_str().map(String::from);
                // Not recovered: the position is the room's, in its (maybe new) epoch.
                if frame["recovered"] == false || entry.last_id.is_none() {
                    entry.last_id = frame["last_id"].as_str().map(String::from);
                }
            }
            // The server could not refill a gap: the room stands at `last_id` in a
            // (maybe new) epoch; what is up to it comes from a reload.
            Some("resync") => {
                let epoch = frame["epoch"].as_str().map(String::from);
                let at = frame["last_id"].as_str().unwrap_or("0-0");
                // Within one epoch an id already seen stays seen; ids of another epoch
                // cannot be compared with ours.
                let keep = epoch.is_some()
                    && entry.epoch == epoch
                    && entry
                        .last_id
                        .as_deref()
                        .and_then(|last| compare_ids(last, at))
                        == Some(Ordering::Greater);
                if !keep {
                    entry.last_id = Some(at.to_owned());
                }
                entry.epoch = epoch;
                entry.joining = false;
                entry.reload = Some(frame["last_id"].as_str().map(String::from));
            }
            _ => {}
        }
        Verdict::Deliver
    }

    /// The `history` request that reloads `room` after a `resync` (its answer carries
    /// `ref` `"resync:<room>"`; see [`Resume::reloaded`]).
    pub fn reload_frame(room: &str, limit: u32) -> Value {
        json!({"type": "history", "room": room, "limit": limit, "ref": format!("resync:{room}")})
    }

    /// If `frame` answers a reload asked by [`Resume::reload_frame`], keeps in its
    /// `messages` only what the `resync` said the reload covers (ids up to its
    /// `last_id`): newer ones are live frames, handed over (or to be) on their own.
    /// Returns whether it was such an answer.
    pub fn reloaded(&mut self, frame: &mut Value) -> bool {
        if frame["type"] != "history" {
            return false;
        }
        let Some(room) = frame["ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("resync:"))
        else {
            return false;
        };
        let Some(through) = self.rooms.get_mut(room).and_then(|e| e.reload.take()) else {
            return false;
        };
        if let Some(list) = frame["messages"].as_array_mut() {
            list.retain(|m| match (m["id"].as_str(), through.as_deref()) {
                (_, None) => false,
                (Some(id), Some(t)) => compare_ids(id, t) != Some(Ordering::Greater),
                (None, Some(_)) => true,
            });
        }
        true
    }

    /// The `join` frames that resume every room after a reconnection.
    pub fn rejoin_frames(&self) -> Vec<Value> {
        self.rooms
            .iter()
            .map(|(room, r)| {
                let mut f = json!({"type": "join", "room": room, "since": r.last_id.as_deref().unwrap_or("0-0")});
                if let Some(e) = &r.epoch {
                    f["epoch"] = json!(e);
                }
                f
            })
            .collect()
    }

    /// [`Resume::rejoin_frames`], noting that every room is being rejoined (reloads
    /// awaited on the lost connection are forgotten: their answers will not come).
    pub fn rejoin(&mut self) -> Vec<Value> {
        for r in self.rooms.values_mut() {
            r.joining = true;
            r.reload = None;
        }
        self.rejoin_frames()
    }

    /// The rooms followed.
    pub fn rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.keys().map(String::as_str)
    }

    /// The position of `room`: (last id, epoch), as the next rejoin sends them.
    pub fn position(&self, room: &str) -> Option<(Option<&str>, Option<&str>)> {
        self.rooms
            .get(room)
            .map(|r| (r.last_id.as_deref(), r.epoch.as_deref()))
    }
}
