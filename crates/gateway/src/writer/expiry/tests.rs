//! Unit tests of [`super`]: the notice once per token, the expiry, a moved `exp`
//! waking the timer. Tokens' `exp` is whole seconds of the wall clock, so these run
//! on real time, bounded.

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn now_s() -> u64 {
    seconds(SystemTime::now())
}

fn expiry(exp: u64, notice_s: u64) -> Arc<Expiry> {
    Expiry::new(at(exp), Duration::from_secs(notice_s), Counter::default())
}

async fn next(timer: &mut Option<Box<ExpiryTimer>>) -> Due {
    tokio::time::timeout(WAIT, due(timer))
        .await
        .expect("something due in time")
}

async fn nothing_due(timer: &mut Option<Box<ExpiryTimer>>) {
    let got = tokio::time::timeout(Duration::from_millis(200), due(timer)).await;
    assert!(got.is_err(), "nothing is due yet: {got:?}");
}

#[tokio::test]
async fn the_notice_comes_once_then_the_expiry() {
    // Less is left than the notice: the notice is due at once, then the expiry.
    let exp = now_s() + 1;
    let shared = expiry(exp, 30);
    let mut timer = Some(Box::new(ExpiryTimer::new(shared.clone())));
    assert_eq!(next(&mut timer).await, Due::Notice(exp));
    let due_at = tokio::time::Instant::now();
    assert_eq!(next(&mut timer).await, Due::Expired);
    assert!(shared.has_passed(SystemTime::now()));
    assert!(due_at.elapsed() <= Duration::from_millis(1100));
    // Expired stays so: the writer ends on it.
    assert_eq!(next(&mut timer).await, Due::Expired);
}

#[tokio::test]
async fn a_new_exp_wakes_the_timer_and_gets_its_own_notice() {
    let first = now_s() + 600;
    let shared = expiry(first, 30);
    let mut timer = Some(Box::new(ExpiryTimer::new(shared.clone())));
    nothing_due(&mut timer).await;
    // A refresh to a token expiring within the notice: woken, noticed at once.
    let second = now_s() + 10;
    let waiting = tokio::spawn(async move {
        let d = next(&mut timer).await;
        (d, timer)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    shared.set(at(second));
    let (d, mut timer) = waiting.await.expect("the timer task");
    assert_eq!(d, Due::Notice(second));
    // The same token is not noticed twice; a later one is, when its time comes.
    nothing_due(&mut timer).await;
    shared.set(at(second + 600));
    nothing_due(&mut timer).await;
    assert_eq!(shared.exp(), second + 600);
}

#[tokio::test]
async fn without_a_notice_only_the_expiry_is_due() {
    let exp = now_s() + 1;
    let mut timer = Some(Box::new(ExpiryTimer::new(expiry(exp, 0))));
    assert_eq!(next(&mut timer).await, Due::Expired);
    let mut none: Option<Box<ExpiryTimer>> = None;
    nothing_due(&mut none).await;
}

#[test]
fn a_notice_is_queued_and_counted_and_a_full_queue_closes() {
    let shared = expiry(now_s() + 60, 30);
    let queue = Queue::new(1, 1 << 20);
    let control = Control::new(tokio_util::sync::CancellationToken::new());
    queue_notice(&shared, &queue, &control, 42);
    match queue.try_pop() {
        Some(Outbound::Frame(f)) => assert_eq!(f.as_str(), r#"{"type":"refresh_needed","exp":42}"#),
        other => panic!("{other:?}"),
    }
    assert_eq!(shared.notices.get(), 1);
    queue
        .push(Outbound::Frame(Utf8Bytes::from_static("{}")))
        .unwrap();
    queue_notice(&shared, &queue, &control, 42);
    assert_eq!(control.code(), Some(CloseCode::TryAgainLater.code()));
}
