//! Publishers: an open-loop schedule by absolute time (a slow server cannot slow the
//! schedule; when the publisher itself falls behind, its lag is measured and reported),
//! or a burst sent as fast as possible with batched writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::adapter::{self, Target};
use crate::conn::Ws;
use crate::stamp::{self, Stamp};
use crate::stats::histogram;

/// Failures noticed by background readers, checked by the controller.
#[derive(Debug, Default)]
pub(crate) struct Failure {
    msg: Mutex<Option<String>>,
    /// Set while the bench closes its connections on purpose.
    pub closing: AtomicBool,
}

impl Failure {
    /// Records the first failure.
    pub(crate) fn set(&self, m: String) {
        let mut g = self.msg.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(m);
        }
    }

    /// The failure, if any.
    pub(crate) fn get(&self) -> Option<String> {
        self.msg.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// An error when a failure was recorded.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        match self.get() {
            Some(m) => Err(anyhow::anyhow!(m)),
            None => Ok(()),
        }
    }
}

/// What one publisher does in one phase.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    /// `count` messages at `rate` msgs/s, from `start` on, tagged `run`.
    Steady {
        /// Tag (0: warm-up).
        run: u32,
        /// Msgs/s of this publisher.
        rate: f64,
        /// How many.
        count: u64,
        /// Scheduled time of the first.
        start: Instant,
    },
    /// `count` messages as fast as possible, from `start` on, tagged `run`.
    Burst {
        /// Tag.
        run: u32,
        /// How many.
        count: u64,
        /// When to begin.
        start: Instant,
    },
}

/// What a publisher did in one phase.
#[derive(Debug, Clone)]
pub(crate) struct PhaseStats {
    /// Messages sent.
    pub sent: u64,
    /// Lag behind the schedule per message, µs.
    pub lag: Histogram<u64>,
    /// First and last send, ns since the origin.
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
}

/// One publishing connection.
pub(crate) struct Publisher {
    idx: u32,
    target: Target,
    sink: SplitSink<Ws, Message>,
    reader: JoinHandle<()>,
    /// Its own copies of its messages (a member gets what it publishes).
    pub echoes: Arc<AtomicU64>,
}

impl Publisher {
    /// Takes a joined connection; a background reader drains it and records errors
    /// (notably `rate_limited`) and closes in `failure`.
    pub(crate) fn new(
        ws: Ws,
        idx: u32,
        target: Target,
        failure: Arc<Failure>,
        rate_hint: f64,
    ) -> Publisher {
        let (sink, mut stream) = ws.split();
        let echoes = Arc::new(AtomicU64::new(0));
        let e = echoes.clone();
        let reader = tokio::spawn(async move {
            while let Some(m) = stream.next().await {
                match m {
                    Ok(Message::Text(t)) => {
                        if let Some(code) = adapter::error_code(target, &t) {
                            let hint = if code == "rate_limited" {
                                format!(
                                    ": this publisher sends up to {rate_hint:.0} frames/s, more than the \
                                     gateway's --rate-limit allows (default 20/s, burst 40); restart the \
                                     gateway with e.g. --rate-limit {} or use more --publishers",
                                    (rate_hint * 2.0).max(100.0).ceil()
                                )
                            } else {
                                String::new()
                            };
                            failure.set(format!(
                                "publisher {idx}: the gateway answered error {code}{hint} ({})",
                                adapter::clip(&t)
                            ));
                        } else {
                            e.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok(Message::Close(f)) => {
                        if !failure.closing.load(Ordering::Relaxed) {
                            let code = f.map(|f| u16::from(f.code)).unwrap_or(1005);
                            failure.set(format!(
                                "publisher {idx}: the server closed the connection (code {code})"
                            ));
                        }
                        return;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        if !failure.closing.load(Ordering::Relaxed) {
                            failure.set(format!("publisher {idx}: connection failed: {err}"));
                        }
                        return;
                    }
                }
            }
        });
        Publisher {
            idx,
            target,
            sink,
            reader,
            echoes,
        }
    }

    /// Runs the phases in order.
    pub(crate) async fn run(
        &mut self,
        phases: &[Phase],
        room: &str,
        size: usize,
    ) -> anyhow::Result<Vec<PhaseStats>> {
        let mut out = Vec::with_capacity(phases.len());
        for p in phases {
            out.push(match *p {
                Phase::Steady {
                    run,
                    rate,
                    count,
                    start,
                } => self.steady(run, rate, count, start, room, size).await?,
                Phase::Burst { run, count, start } => {
                    self.burst(run, count, start, room, size).await?
                }
            });
        }
        Ok(out)
    }

    async fn steady(
        &mut self,
        run: u32,
        rate: f64,
        count: u64,
        start: Instant,
        room: &str,
        size: usize,
    ) -> anyhow::Result<PhaseStats> {
        let mut st = PhaseStats {
            sent: 0,
            lag: histogram(),
            first_ns: u64::MAX,
            last_ns: 0,
        };
        let interval = 1e9 / rate.max(1e-9);
        let start_ns = stamp::ns_of(start.into_std());
        let mut content = String::with_capacity(size + 64);
        tokio::time::sleep_until(start).await;
        while st.sent < count {
            let now = stamp::now_ns();
            let elapsed = now.saturating_sub(start_ns) as f64;
            let due = ((elapsed / interval).floor() as u64 + 1).min(count);
            if due > st.sent {
                for seq in st.sent..due {
                    let sched = start_ns + (seq as f64 * interval) as u64;
                    st.lag.saturating_record(now.saturating_sub(sched) / 1000);
                    self.feed(run, seq, now, room, size, &mut content).await?;
                }
                self.sink
                    .flush()
                    .await
                    .map_err(|e| anyhow::anyhow!("publisher {}: write failed: {e}", self.idx))?;
                st.first_ns = st.first_ns.min(now);
                st.last_ns = now;
                st.sent = due;
            }
            if st.sent < count {
                let next = start_ns + (st.sent as f64 * interval) as u64;
                tokio::time::sleep_until(stamp::instant_of(next).into()).await;
            }
        }
        Ok(st)
    }

    async fn burst(
        &mut self,
        run: u32,
        count: u64,
        start: Instant,
        room: &str,
        size: usize,
    ) -> anyhow::Result<PhaseStats> {
        let mut st = PhaseStats {
            sent: 0,
            lag: histogram(),
            first_ns: u64::MAX,
            last_ns: 0,
        };
        let mut content = String::with_capacity(size + 64);
        tokio::time::sleep_until(start).await;
        st.first_ns = stamp::now_ns();
        for seq in 0..count {
            let now = stamp::now_ns();
            self.feed(run, seq, now, room, size, &mut content).await?;
        }
        self.sink
            .flush()
            .await
            .map_err(|e| anyhow::anyhow!("publisher {}: write failed: {e}", self.idx))?;
        st.sent = count;
        st.last_ns = stamp::now_ns();
        Ok(st)
    }

    async fn feed(
        &mut self,
        run: u32,
        seq: u64,
        now: u64,
        room: &str,
        size: usize,
        content: &mut String,
    ) -> anyhow::Result<()> {
        stamp::encode(
            content,
            Stamp {
                run,
                publisher: self.idx,
                seq,
                nanos: now,
            },
            size,
        );
        let frame = adapter::publish_frame(self.target, room, content);
        self.sink
            .feed(Message::text(frame))
            .await
            .map_err(|e| anyhow::anyhow!("publisher {}: write failed: {e}", self.idx))
    }

    /// Closes the connection.
    pub(crate) async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sink.close()).await;
        self.reader.abort();
    }
}
