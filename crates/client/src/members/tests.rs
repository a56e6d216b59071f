//! Unit tests of [`super`].
use super::*;

fn m(id: &str) -> Member {
    Member {
        user_id: id.into(),
        username: id.to_uppercase(),
    }
}

fn page(room: &str, ids: &[&str], next: Option<&str>, count: u64) -> MembersPage {
    MembersPage {
        room: room.into(),
        members: ids.iter().map(|i| m(i)).collect(),
        next_cursor: next.map(String::from),
        count,
    }
}

fn frame(v: Value) -> ServerFrame {
    serde_json::from_value(v).expect("a server frame")
}

fn ids(r: &RoomMembers) -> Vec<&str> {
    r.members.keys().map(String::as_str).collect()
}

#[test]
fn the_members_frame() {
    assert_eq!(
        members_frame("big", None, None),
        json!({"type":"members","room":"big"})
    );
    assert_eq!(
        members_frame("big", Some("17.2"), Some(20)),
        json!({"type":"members","room":"big","cursor":"17.2","limit":20})
    );
}

#[test]
fn joined_and_members_answers_parse() {
    let j = Joined::from_frame(frame(json!({"type":"joined","room":"r","members":[{"user_id":"a","username":"A"}],
        "members_count":150,"members_more":true,"presence":"full","last_id":null,"epoch":"e","recovered":true})))
    .expect("joined");
    assert_eq!(
        (j.members_count, j.members_more, j.presence, j.members.len()),
        (150, true, PresenceMode::Full, 1)
    );
    // an older server: the new fields default
    let j = Joined::from_frame(frame(json!({"type":"joined","room":"r","members":[],
        "last_id":null,"epoch":"e","recovered":true})))
    .expect("joined");
    assert_eq!((j.members_count, j.presence), (0, PresenceMode::Full));
    let p = MembersPage::from_frame(frame(json!({"type":"members","ref":"x","room":"r",
        "members":[{"user_id":"a","username":"A"}],"next_cursor":null,"count":1})))
    .expect("members");
    assert_eq!(p, page("r", &["a"], None, 1));
    assert!(MembersPage::from_frame(frame(json!({"type":"pong"}))).is_none());
}

/// Serves `n` users like the embedded broker: the cursor is the next index.
fn serve(n: usize, req: &PageRequest) -> MembersPage {
    let at: usize = req.0.as_deref().map_or(0, |c| c.parse().expect("cursor"));
    let end = n.min(at + req.1 as usize);
    let names: Vec<String> = (at..end).map(|i| format!("u{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let next = (end < n).then(|| end.to_string());
    page("r", &refs, next.as_deref(), n as u64)
}

#[test]
fn the_pager_stops_at_the_null_cursor() {
    let mut p = MemberPager::new(20, 10_000, None);
    let mut cursors = Vec::new();
    while let Some(req) = p.next_request() {
        cursors.push(req.0.clone());
        p.on_page(serve(150, &req)).expect("no loop");
    }
    let all = p.finish();
    assert_eq!(all.pages, 8);
    assert_eq!(cursors[0], None);
    assert_eq!(cursors[7].as_deref(), Some("140"));
    assert_eq!(all.members.len(), 150);
    assert!(all.complete);
    assert_eq!((all.count, all.next_cursor), (150, None));
    // an empty room: one page
    let mut p = MemberPager::new(20, 10_000, None);
    let req = p.next_request().expect("a request");
    p.on_page(serve(0, &req)).expect("no loop");
    assert!(p.next_request().is_none());
    assert!(p.finish().complete);
}

#[test]
fn the_pager_is_bounded_by_max_and_resumes() {
    let mut p = MemberPager::new(20, 50, None);
    let mut limits = Vec::new();
    while let Some(req) = p.next_request() {
        limits.push(req.1);
        p.on_page(serve(150, &req)).expect("no loop");
    }
    assert_eq!(limits, vec![20, 20, 10]);
    let some = p.finish();
    assert_eq!(
        (
            some.members.len(),
            some.complete,
            some.next_cursor.as_deref()
        ),
        (50, false, Some("50"))
    );
    let mut p = MemberPager::new(5000, 10_000, some.next_cursor);
    let req = p.next_request().expect("a request");
    assert_eq!(req, (Some("50".into()), MEMBERS_LIMIT_MAX));
    p.on_page(serve(150, &req)).expect("no loop");
    let rest = p.finish();
    assert_eq!((rest.members.len(), rest.complete), (100, true));
    // max 0 asks nothing; a page over max is cut and not complete
    assert!(MemberPager::new(10, 0, None).next_request().is_none());
    let mut p = MemberPager::new(10, 2, None);
    p.on_page(page("r", &["a", "b", "c"], None, 3))
        .expect("no loop");
    let cut = p.finish();
    assert_eq!((cut.members.len(), cut.complete), (2, false));
}

#[test]
fn the_pager_lists_each_user_once_and_catches_loops() {
    let mut p = MemberPager::new(10, 100, None);
    p.on_page(page("r", &["a", "b"], Some("x"), 3))
        .expect("no loop");
    p.on_page(page("r", &["b", "c"], None, 3)).expect("no loop");
    let all = p.finish();
    let got: Vec<&str> = all.members.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(got, vec!["a", "b", "c"]);
    // empty pages go on, unless they lead back to a cursor already seen
    let mut p = MemberPager::new(10, 100, None);
    p.on_page(page("r", &[], Some("1"), 3)).expect("no loop");
    p.on_page(page("r", &[], Some("2"), 3)).expect("no loop");
    assert_eq!(
        p.on_page(page("r", &[], Some("1"), 3)),
        Err(CursorLoop("1".into()))
    );
    assert!(p.is_done());
}

#[test]
fn the_tracker_follows_joined_presence_and_counts() {
    let mut t = MemberTracker::default();
    t.on_frame(&frame(json!({"type":"joined","room":"a","members":[{"user_id":"x","username":"X"}],
        "members_count":1,"members_more":false,"presence":"full","last_id":null,"epoch":"e","recovered":true})));
    let r = t.get("a").expect("tracked");
    assert_eq!(
        (r.members_count, r.presence, r.complete),
        (1, PresenceMode::Full, true)
    );
    t.on_frame(&frame(json!({"type":"presence","room":"a","event":"join","user":{"user_id":"y","username":"Y"},"count":2})));
    assert_eq!(ids(t.get("a").expect("tracked")), vec!["x", "y"]);
    t.on_frame(&frame(json!({"type":"presence","room":"a","event":"leave","user":{"user_id":"x","username":"X"},"count":1})));
    let r = t.get("a").expect("tracked");
    assert_eq!((ids(r), r.members_count, r.complete), (vec!["y"], 1, true));
    // over the limit: count mode, the list forgotten
    let c = t.on_frame(&frame(
        json!({"type":"presence_count","room":"a","count":1001}),
    ));
    assert_eq!(c.map(|c| c.mode_changed), Some(true));
    let r = t.get("a").expect("tracked");
    assert_eq!(
        (r.presence, r.members_count, r.complete, r.members.len()),
        (PresenceMode::Count, 1001, false, 0)
    );
    // back: full again, incomplete until paged
    let c = t.on_frame(&frame(json!({"type":"presence","room":"a","event":"leave","user":{"user_id":"z","username":"Z"},"count":899})));
    assert_eq!(c.map(|c| c.mode_changed), Some(true));
    let r = t.get("a").expect("tracked");
    assert_eq!(
        (r.presence, r.members_count, r.complete),
        (PresenceMode::Full, 899, false)
    );
    // a count room: only the count
    t.on_frame(&frame(
        json!({"type":"joined","room":"c","members":[],"members_count":5,"members_more":false,
        "presence":"count","last_id":null,"epoch":"e","recovered":true}),
    ));
    let c = t.on_frame(&frame(
        json!({"type":"presence_count","room":"c","count":6}),
    ));
    assert_eq!(c.map(|c| c.mode_changed), Some(false));
    assert_eq!(
        t.get("c").map(|r| (r.members_count, r.complete)),
        Some((6, false))
    );
    // rooms not joined are not tracked
    assert!(t
        .on_frame(&frame(
            json!({"type":"presence_count","room":"zz","count":6})
        ))
        .is_none());
    t.remove("c");
    assert!(t.get("c").is_none());
}

#[test]
fn a_scan_to_the_last_page_completes_the_list() {
    let mut t = MemberTracker::default();
    t.on_frame(&frame(json!({"type":"joined","room":"a","members":[{"user_id":"a0","username":"A0"}],
        "members_count":5,"members_more":true,"presence":"full","last_id":null,"epoch":"e","recovered":true})));
    assert!(!t.get("a").expect("tracked").complete);
    let scan = t.on_request("a", None);
    t.on_page(None, &page("a", &["a0", "a1"], Some("c1"), 5), scan);
    t.on_frame(&frame(json!({"type":"presence","room":"a","event":"leave","user":{"user_id":"a2","username":"A2"},"count":4})));
    t.on_frame(&frame(json!({"type":"presence","room":"a","event":"join","user":{"user_id":"a5","username":"A5"},"count":5})));
    assert_eq!(t.on_request("a", Some("c1")), scan);
    t.on_page(Some("c1"), &page("a", &["a2", "a3"], Some("c2"), 5), scan);
    let c = t.on_page(Some("c2"), &page("a", &["a4"], None, 5), scan);
    assert_eq!(c.map(|c| c.completed), Some(true));
    let r = t.get("a").expect("tracked");
    assert_eq!(ids(r), vec!["a0", "a1", "a3", "a4", "a5"]);
    assert!(r.complete);
    // a page out of sequence or after a disconnection completes nothing
    t.on_frame(&frame(
        json!({"type":"joined","room":"a","members":[],"members_count":2,"members_more":true,
        "presence":"full","last_id":null,"epoch":"e","recovered":true}),
    ));
    let mid = t.on_request("a", Some("c9"));
    let c = t.on_page(Some("c9"), &page("a", &["x"], None, 2), mid);
    assert_eq!(c.map(|c| c.completed), Some(false));
    let scan = t.on_request("a", None);
    t.disconnected();
    let c = t.on_page(None, &page("a", &["x", "y"], None, 2), scan);
    assert_eq!(c.map(|c| c.completed), Some(false));
    assert!(!t.get("a").expect("tracked").complete);
}
