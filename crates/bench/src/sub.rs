//! Subscriber connections, many per task: each task polls its connections through one
//! `SelectAll`, keeps one histogram and one set of counters, and hands them over when
//! asked. No task or channel per connection.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::SelectAll;
use futures_util::{Sink, Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::adapter::Target;
use crate::conn::Ws;
use crate::stamp::{self, Scanner};
use crate::stats::{RunStats, Tracker};

/// What a connection yields.
pub(crate) enum Ev {
    /// A text frame.
    Text(Utf8Bytes),
    /// The connection ended: the close code ("1006" when it ended without one).
    Closed(String),
}

/// One connection as a stream of events; answers Socket.IO pings by itself (WebSocket
/// pings are answered by tungstenite while it reads).
pub(crate) struct Conn {
    ws: Ws,
    idx: u32,
    sio: bool,
    pong: bool,
    flushing: bool,
    done: bool,
}

impl Conn {
    /// Wraps `ws`; `idx` names it in the events.
    pub(crate) fn new(ws: Ws, idx: u32, target: Target) -> Self {
        Conn {
            ws,
            idx,
            sio: target == Target::Socketio,
            pong: false,
            flushing: false,
            done: false,
        }
    }

    fn write_pong(&mut self, cx: &mut Context<'_>) {
        if self.pong {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    self.pong = false;
                    if Pin::new(&mut self.ws)
                        .start_send(Message::text("3"))
                        .is_ok()
                    {
                        self.flushing = true;
                    }
                }
                Poll::Ready(Err(_)) => self.pong = false,
                Poll::Pending => {}
            }
        }
        if self.flushing && Pin::new(&mut self.ws).poll_flush(cx).is_ready() {
            self.flushing = false;
        }
    }
}

impl Stream for Conn {
    type Item = (u32, Ev);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        this.write_pong(cx);
        loop {
            let closed = |this: &mut Conn, code: String| {
                this.done = true;
                Poll::Ready(Some((this.idx, Ev::Closed(code))))
            };
            match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Text(t)))) => {
                    if this.sio && t.as_str() == "2" {
                        this.pong = true;
                        this.write_pong(cx);
                        continue;
                    }
                    return Poll::Ready(Some((this.idx, Ev::Text(t))));
                }
                Poll::Ready(Some(Ok(Message::Close(f)))) => {
                    let code = f.map(|f| u16::from(f.code)).unwrap_or(1005);
                    return closed(this, code.to_string());
                }
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                    return closed(this, "1006".into());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// State shared by the controller and every subscriber task.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The run whose deliveries are measured now.
    pub active_run: AtomicU32,
}

enum Cmd {
    Collect(Vec<u64>, oneshot::Sender<RunStats>),
    Stop(oneshot::Sender<()>),
}

/// A running subscriber task.
pub(crate) struct Group {
    cmd: mpsc::Sender<Cmd>,
    /// Measured deliveries so far (for progress and the drain).
    pub delivered: Arc<AtomicU64>,
}

impl Group {
    /// Starts a task for these connections; `publishers` is how many publishers there
    /// are (for per-publisher order tracking).
    pub(crate) fn spawn(conns: Vec<(Ws, Target)>, publishers: usize, shared: Arc<Shared>) -> Group {
        let (tx, rx) = mpsc::channel(4);
        let delivered = Arc::new(AtomicU64::new(0));
        let size = conns.len();
        let mut all = SelectAll::new();
        for (i, (ws, target)) in conns.into_iter().enumerate() {
            all.push(Conn::new(ws, i as u32, target));
        }
        let d = delivered.clone();
        tokio::spawn(run(all, size, publishers, shared, d, rx));
        Group { cmd: tx, delivered }
    }

    /// The task's stats for the active run (and resets them), given what each
    /// publisher sent in it.
    pub(crate) async fn collect(&self, sent: Vec<u64>) -> RunStats {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Collect(sent, tx)).await.is_err() {
            return RunStats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Closes every connection of the task.
    pub(crate) async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    mut all: SelectAll<Conn>,
    size: usize,
    publishers: usize,
    shared: Arc<Shared>,
    delivered: Arc<AtomicU64>,
    mut rx: mpsc::Receiver<Cmd>,
) {
    let scanner = Scanner::new();
    let mut trackers: Vec<Vec<Tracker>> = vec![vec![Tracker::default(); publishers]; size];
    let mut stats = RunStats::default();
    let mut closed = 0u64;
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(Cmd::Collect(sent, reply)) => {
                    let mut out = std::mem::take(&mut stats);
                    for t in trackers.iter_mut() {
                        out.account(t, &sent);
                        t.iter_mut().for_each(|x| *x = Tracker::default());
                    }
                    out.closed = closed;
                    out.close_codes = codes.clone();
                    delivered.store(0, Ordering::Relaxed);
                    let _ = reply.send(out);
                }
                Some(Cmd::Stop(done)) => {
                    for c in all.iter_mut() {
                        let _ = c.ws.close(None).await;
                    }
                    drop(all);
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            Some((idx, ev)) = all.next(), if !all.is_empty() => match ev {
                Ev::Text(t) => {
                    let Some(st) = scanner.scan(t.as_bytes()) else { continue };
                    if st.run != shared.active_run.load(Ordering::Relaxed) || st.run == 0 {
                        stats.stray += 1;
                        continue;
                    }
                    let now = stamp::now_ns();
                    stats.hist.saturating_record(now.saturating_sub(st.nanos) / 1000);
                    stats.deliveries += 1;
                    stats.first_ns = stats.first_ns.min(now);
                    stats.last_ns = now;
                    delivered.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = trackers[idx as usize].get_mut(st.publisher as usize) {
                        t.see(st.seq);
                    }
                }
                Ev::Closed(code) => {
                    closed += 1;
                    *codes.entry(code).or_default() += 1;
                }
            },
        }
    }
}
