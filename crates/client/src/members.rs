//! Members of big rooms: the `members` request, paging to the end, and what a client
//! knows of each joined room (count, presence mode, member list), kept current from
//! `joined`, `presence`, `presence_count` and `members` frames. Pure: no I/O.
//!
//! - [`members_frame`]: the `members` client frame.
//! - [`MembersPage`]: a `members` answer; [`Joined`]: a `joined` answer.
//! - [`MemberPager`]: pages from the first page (or a cursor) to the last, bounded by a
//!   number of users; used by [`crate::Client::all_members`].
//! - [`MemberTracker`]: per joined room, `members_count`, `presence` mode, the members
//!   known and whether that list is complete (the same rules as `client.js`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};
use wsgate_protocol::server::{Member, PresenceEvent, PresenceMode, ServerFrame};

/// Largest `limit` of a `members` request.
pub const MEMBERS_LIMIT_MAX: u32 = 1000;

/// The `members` client frame: a page of `room`'s users after `cursor` (`None`: the
/// first page), at most `limit` (1–1000; `None`: the server's default, 100).
pub fn members_frame(room: &str, cursor: Option<&str>, limit: Option<u32>) -> Value {
    let mut f = json!({"type": "members", "room": room});
    if let Some(c) = cursor {
        f["cursor"] = json!(c);
    }
    if let Some(l) = limit {
        f["limit"] = json!(l);
    }
    f
}

/// The answer to `join`.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// The room.
    pub room: String,
    /// `full` rooms: at most `--joined-members` users; empty in `count`/`off` rooms.
    pub members: Vec<Member>,
    /// Distinct users present (0 in an `off` room).
    pub members_count: u64,
    /// `members` does not list everyone (page with `members`).
    pub members_more: bool,
    /// What the room shows now.
    pub presence: PresenceMode,
    /// The newest message id of the room's history.
    pub last_id: Option<String>,
    /// The history's epoch.
    pub epoch: String,
    /// Whether the replay before it is known to be complete.
    pub recovered: bool,
}

impl Joined {
    /// The `joined` in `frame`, if it is one.
    pub fn from_frame(frame: ServerFrame) -> Option<Joined> {
        match frame {
            ServerFrame::Joined {
                room,
                members,
                members_count,
                members_more,
                presence,
                last_id,
                epoch,
                recovered,
                ..
            } => Some(Joined {
                room,
                members,
                members_count,
                members_more,
                presence,
                last_id,
                epoch,
                recovered,
            }),
            _ => None,
        }
    }
}

/// One page of a room's users: the answer to `members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembersPage {
    /// The room.
    pub room: String,
    /// At most `limit` users, each once.
    pub members: Vec<Member>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
    /// The room's distinct users when the page was read.
    pub count: u64,
}

impl MembersPage {
    /// The page in `frame`, if it is a `members` answer.
    pub fn from_frame(frame: ServerFrame) -> Option<MembersPage> {
        match frame {
            ServerFrame::Members {
                room,
                members,
                next_cursor,
                count,
                ..
            } => Some(MembersPage {
                room,
                members,
                next_cursor,
                count,
            }),
            _ => None,
        }
    }
}

/// Every member of a room, as [`MemberPager`] collected them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllMembers {
    /// Each user once, in the order first listed.
    pub members: Vec<Member>,
    /// The room's distinct users when the last page was read.
    pub count: u64,
    /// The last page was reached (not stopped by `max`).
    pub complete: bool,
    /// Where it stopped (`None` when complete): pass it to go on.
    pub next_cursor: Option<String>,
    /// Pages read.
    pub pages: u32,
}

/// Pages through a room's members, from the first page (or a given cursor) to the last
/// (`next_cursor: None`), asking for at most `max` users in all; each user is kept
/// once. Drive it with [`MemberPager::next_request`] and [`MemberPager::on_page`].
#[derive(Debug, Clone)]
pub struct MemberPager {
    limit: u32,
    max: usize,
    cursor: Option<String>,
    done: bool,
    listed: usize,
    seen: BTreeSet<String>,
    empty_cursors: BTreeSet<String>,
    out: AllMembers,
}

/// A pager's request: the cursor (`None`: the first page) and the limit to send.
pub type PageRequest = (Option<String>, u32);

/// A server that pages in circles: an empty page led back to a cursor already seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("members cursor {0} came back")]
pub struct CursorLoop(pub String);

impl MemberPager {
    /// Pages of `limit` users (clamped to 1–1000), at most `max` users, from `cursor`.
    pub fn new(limit: u32, max: usize, cursor: Option<String>) -> MemberPager {
        MemberPager {
            limit: limit.clamp(1, MEMBERS_LIMIT_MAX),
            max,
            cursor,
            done: max == 0,
            listed: 0,
            seen: BTreeSet::new(),
            empty_cursors: BTreeSet::new(),
            out: AllMembers::default(),
        }
    }

    /// The next request to send, or `None` when done.
    pub fn next_request(&self) -> Option<PageRequest> {
        if self.done {
            return None;
        }
        let left = self.max.saturating_sub(self.listed);
        let limit = self.limit.min(u32::try_from(left).unwrap_or(u32::MAX));
        Some((self.cursor.clone(), limit))
    }

    /// Takes the answer to the last request.
    ///
    /// # Errors
    /// [`CursorLoop`] when an empty page points back to a cursor already seen (pages
    /// with users are bounded by `max`).
    pub fn on_page(&mut self, page: MembersPage) -> Result<(), CursorLoop> {
        self.out.pages += 1;
        self.out.count = page.count;
        let room_left = self.max.saturating_sub(self.listed);
        let cut = page.members.len() > room_left;
        let empty = page.members.is_empty();
        for m in page.members.into_iter().take(room_left) {
            self.listed += 1;
            if self.seen.insert(m.user_id.clone()) {
                self.out.members.push(m);
            }
        }
        self.cursor = page.next_cursor;
        match &self.cursor {
            None => {
                self.done = true;
                self.out.complete = !cut;
            }
            Some(c) => {
                if empty && !self.empty_cursors.insert(c.clone()) {
                    self.done = true;
                    return Err(CursorLoop(c.clone()));
                }
                if self.listed >= self.max {
                    self.done = true;
                }
            }
        }
        Ok(())
    }

    /// Whether no request is left.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// What was collected.
    pub fn finish(mut self) -> AllMembers {
        self.out.next_cursor = if self.out.complete { None } else { self.cursor };
        self.out
    }
}

/// What a client knows of one joined room's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMembers {
    /// Distinct users (from `joined`, then every `presence`, `presence_count`, `members`).
    pub members_count: u64,
    /// `full`, `count` or `off`; a `presence_count` in a `full` room switches it to
    /// `count` (over its limit), a `presence` in a `count` room back to `full`.
    pub presence: PresenceMode,
    /// user id → display name of the users known to be present.
    pub members: BTreeMap<String, String>,
    /// `members` is the whole room and kept so by `presence` events: a `joined` that
    /// listed everyone, or a scan from the first page to the last in a `full` room.
    pub complete: bool,
}

/// A scan in progress: pages from the first to the last, with the users who joined or
/// left (by `presence`) meanwhile.
#[derive(Debug, Clone, Default)]
struct Scan {
    id: u64,
    expect: Option<String>,
    seen: BTreeMap<String, String>,
    joined: BTreeMap<String, String>,
    left: BTreeSet<String>,
}

/// What a frame changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The room's presence mode changed (its list was forgotten: page it again).
    pub mode_changed: bool,
    /// A scan reached its last page: the list is now the whole room.
    pub completed: bool,
}

/// Per joined room: count, presence mode and members, kept current from the server's
/// frames. Feed it every frame ([`MemberTracker::on_frame`]); for `members` answers,
/// [`MemberTracker::on_request`] when sending and [`MemberTracker::on_page`] with the
/// answer (a request without a cursor starts a scan; the pages that follow it cursor
/// to cursor complete it). A new `joined` starts the room afresh; a change of mode
/// forgets the list.
#[derive(Debug, Clone, Default)]
pub struct MemberTracker {
    rooms: BTreeMap<String, RoomMembers>,
    scans: HashMap<String, Scan>,
    next_scan: u64,
}

impl MemberTracker {
    /// What is known of `room` (joined rooms only).
    pub fn get(&self, room: &str) -> Option<&RoomMembers> {
        self.rooms.get(room)
    }

    /// Forgets a room (after `leave`).
    pub fn remove(&mut self, room: &str) {
        self.rooms.remove(room);
        self.scans.remove(room);
    }

    /// After a disconnection: events are missed until the rejoin's `joined`.
    pub fn disconnected(&mut self) {
        for r in self.rooms.values_mut() {
            r.complete = false;
        }
        self.scans.clear();
    }

    /// Takes one server frame (`joined`, `presence`, `presence_count`; others are
    /// ignored, `members` answers go to [`MemberTracker::on_page`]). Returns what
    /// changed for a tracked room.
    pub fn on_frame(&mut self, frame: &ServerFrame) -> Option<Change> {
        match frame {
            ServerFrame::Joined {
                room,
                members,
                members_count,
                members_more,
                presence,
                ..
            } => {
                self.rooms.insert(
                    room.clone(),
                    RoomMembers {
                        members_count: *members_count,
                        presence: *presence,
                        members: members
                            .iter()
                            .map(|m| (m.user_id.clone(), m.username.clone()))
                            .collect(),
                        complete: *presence == PresenceMode::Full && !members_more,
                    },
                );
                self.scans.remove(room);
                Some(Change {
                    mode_changed: false,
                    completed: false,
                })
            }
            ServerFrame::Presence {
                room,
                event,
                user,
                count,
            } => {
                let mode_changed = self.set_mode(room, PresenceMode::Full)?;
                let r = self.rooms.get_mut(room)?;
                let scan = self.scans.get_mut(room);
                match event {
                    PresenceEvent::Join => {
                        r.members
                            .insert(user.user_id.clone(), user.username.clone());
                        if let Some(s) = scan {
                            s.joined.insert(user.user_id.clone(), user.username.clone());
                            s.left.remove(&user.user_id);
                        }
                    }
                    PresenceEvent::Leave => {
                        r.members.remove(&user.user_id);
                        if let Some(s) = scan {
                            s.left.insert(user.user_id.clone());
                            s.joined.remove(&user.user_id);
                            s.seen.remove(&user.user_id);
                        }
                    }
                }
                r.members_count = *count;
                Some(Change {
                    mode_changed,
                    completed: false,
                })
            }
            ServerFrame::PresenceCount { room, count } => {
                let mode_changed = self.set_mode(room, PresenceMode::Count)?;
                self.rooms.get_mut(room)?.members_count = *count;
                Some(Change {
                    mode_changed,
                    completed: false,
                })
            }
            _ => None,
        }
    }

    /// Switches a tracked room's mode; `None` for a room not tracked.
    fn set_mode(&mut self, room: &str, mode: PresenceMode) -> Option<bool> {
        let r = self.rooms.get_mut(room)?;
        if r.presence == mode {
            return Some(false);
        }
        r.presence = mode;
        r.members.clear();
        r.complete = false;
        self.scans.remove(room);
        Some(true)
    }

    /// A `members` request for `room` is sent with `cursor`. Returns the scan it
    /// belongs to (pass it to [`MemberTracker::on_page`]).
    pub fn on_request(&mut self, room: &str, cursor: Option<&str>) -> Option<u64> {
        if !self.rooms.contains_key(room) {
            return None;
        }
        if cursor.is_none() {
            self.next_scan += 1;
            let id = self.next_scan;
            self.scans.insert(
                room.to_owned(),
                Scan {
                    id,
                    ..Scan::default()
                },
            );
            return Some(id);
        }
        self.scans.get(room).map(|s| s.id)
    }

    /// The answer to a `members` request sent with `cursor` as part of `scan`. Adds the
    /// users listed (not those who left since the scan began) and takes the count.
    pub fn on_page(
        &mut self,
        cursor: Option<&str>,
        page: &MembersPage,
        scan: Option<u64>,
    ) -> Option<Change> {
        let room = page.room.as_str();
        let r = self.rooms.get_mut(room)?;
        r.members_count = page.count;
        let current = self
            .scans
            .get_mut(room)
            .filter(|s| Some(s.id) == scan && s.expect.as_deref() == cursor);
        let mut completed = false;
        match current {
            None => {
                let left = self.scans.get(room).map(|s| &s.left);
                for m in &page.members {
                    if !left.is_some_and(|l| l.contains(&m.user_id)) {
                        r.members.insert(m.user_id.clone(), m.username.clone());
                    }
                }
            }
            Some(s) => {
                for m in &page.members {
                    if !s.left.contains(&m.user_id) {
                        r.members.insert(m.user_id.clone(), m.username.clone());
                        s.seen.insert(m.user_id.clone(), m.username.clone());
                    }
                }
                match &page.next_cursor {
                    Some(next) => s.expect = Some(next.clone()),
                    None => {
                        let s = self.scans.remove(room).unwrap_or_default();
                        if r.presence == PresenceMode::Full {
                            let mut all = s.seen;
                            all.extend(s.joined);
                            r.members = all;
                            r.complete = true;
                            completed = true;
                        }
                    }
                }
            }
        }
        Some(Change {
            mode_changed: false,
            completed,
        })
    }
}

#[cfg(test)]
mod tests;
