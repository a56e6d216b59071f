//! The webhook flags: where events are POSTed (`--webhook-url`), how they are signed
//! (`--webhook-secret`), which are recorded, and the bounds of batching, retries and
//! the outbox (docs/http-api.md, "Webhooks").

use clap::Args;
use wsgate_broker::{EventName, EventSet, Recording};

/// Longest `--webhook-timeout-ms` and `--webhook-backoff-max-ms`: ten minutes.
const MAX_MS: u64 = 600_000;

/// Webhook flags.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Where batches of webhook events are POSTed (`https://…` or `http://…`);
    /// absent: no webhooks (nothing is recorded).
    #[arg(long, env = "WSGATE_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Key of the HMAC-SHA256 signature of every webhook request (required with
    /// --webhook-url; at least 16 bytes).
    #[arg(long, env = "WSGATE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// The events recorded and sent (comma list): room_occupied, room_vacated,
    /// member_added, member_removed, user_offline, client_message (the last only for
    /// namespaces that opt in).
    #[arg(
        long,
        env = "WSGATE_WEBHOOK_EVENTS",
        value_delimiter = ',',
        default_value = "room_occupied,room_vacated,member_added,member_removed,user_offline,client_message"
    )]
    pub webhook_events: Vec<String>,

    /// Whether clients' messages in the default namespace are sent as
    /// `client_message` events (other namespaces: `webhook_client_messages` in
    /// --config).
    #[arg(long, env = "WSGATE_WEBHOOK_CLIENT_MESSAGES", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_client_messages: bool,

    /// Most events in one POST.
    #[arg(long, env = "WSGATE_WEBHOOK_BATCH_MAX", default_value_t = 100)]
    pub webhook_batch_max: usize,

    /// How long a batch that is not full waits for more events before it is sent
    /// (milliseconds; 0: at once).
    #[arg(long, env = "WSGATE_WEBHOOK_BATCH_MS", default_value_t = 100)]
    pub webhook_batch_ms: u64,

    /// Deadline of one POST, connect to the end of the answer (milliseconds).
    #[arg(long, env = "WSGATE_WEBHOOK_TIMEOUT_MS", default_value_t = 5_000)]
    pub webhook_timeout_ms: u64,

    /// POSTs of one batch before its events are given up (counted as failed; 0:
    /// never given up).
    #[arg(long, env = "WSGATE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 12)]
    pub webhook_max_attempts: u32,

    /// Longest wait between two POSTs of one batch (the waits double from 500 ms,
    /// with jitter, up to this; milliseconds).
    #[arg(long, env = "WSGATE_WEBHOOK_BACKOFF_MAX_MS", default_value_t = 30_000)]
    pub webhook_backoff_max_ms: u64,

    /// Most events an outbox holds, waiting or being delivered; one more drops the
    /// oldest (counted in wsgate_webhook_events_total{outcome="dropped"}). On a Redis
    /// Cluster, per outbox stream (one per hash slot in use).
    #[arg(long, env = "WSGATE_WEBHOOK_QUEUE_LEN", default_value_t = 10_000)]
    pub webhook_queue_len: usize,

    /// Events a node took and has neither delivered nor held for this long (it
    /// died) are taken over by another node (milliseconds; at least twice
    /// --webhook-timeout-ms).
    #[arg(long, env = "WSGATE_WEBHOOK_CLAIM_MS", default_value_t = 30_000)]
    pub webhook_claim_ms: u64,

    /// What the broker records: [`WebhookArgs::selected`], set by
    /// [`crate::Config::load`] (nothing before).
    #[arg(skip)]
    pub recording: Recording,
}

impl WebhookArgs {
    /// Whether webhooks are on.
    pub fn enabled(&self) -> bool {
        self.webhook_url.is_some()
    }

    /// The events selected by `--webhook-events`.
    ///
    /// # Errors
    /// A message naming an unknown event.
    pub fn events(&self) -> Result<EventSet, String> {
        let mut set = EventSet::NONE;
        for name in self.webhook_events.iter().map(|s| s.trim()) {
            if name.is_empty() {
                continue;
            }
            let e = EventName::parse(name)
                .ok_or_else(|| format!("--webhook-events: unknown event {name:?}"))?;
            set = set.with(e);
        }
        Ok(set)
    }

    /// What the broker records: nothing without `--webhook-url`.
    pub fn selected(&self) -> Recording {
        match (self.enabled(), self.events()) {
            (true, Ok(events)) => Recording {
                events,
                max_len: self.webhook_queue_len,
            },
            _ => Recording::OFF,
        }
    }

    /// Whether `event` is recorded.
    pub fn records(&self, event: EventName) -> bool {
        self.selected().records(event)
    }

    /// Checks the values clap cannot.
    ///
    /// # Errors
    /// A message naming the bad flag.
    pub fn validate(&self) -> Result<(), String> {
        self.events()?;
        let Some(url) = &self.webhook_url else {
            return Ok(());
        };
        if crate::http_client::parse_url(url).is_err() {
            return Err("--webhook-url must be an http:// or https:// URL".into());
        }
        if self.webhook_secret.as_deref().is_none_or(|s| s.len() < 16) {
            return Err("--webhook-url needs --webhook-secret of at least 16 bytes".into());
        }
        if !(1..=1000).contains(&self.webhook_batch_max) {
            return Err("--webhook-batch-max must be between 1 and 1000".into());
        }
        if self.webhook_batch_ms > 60_000 {
            return Err("--webhook-batch-ms must be at most 60000".into());
        }
        if !(100..=MAX_MS).contains(&self.webhook_timeout_ms) {
            return Err(format!(
                "--webhook-timeout-ms must be between 100 and {MAX_MS}"
            ));
        }
        if !(500..=MAX_MS).contains(&self.webhook_backoff_max_ms) {
            return Err(format!(
                "--webhook-backoff-max-ms must be between 500 and {MAX_MS}"
            ));
        }
        if !(1..=10_000_000).contains(&self.webhook_queue_len) {
            return Err("--webhook-queue-len must be between 1 and 10000000".into());
        }
        if self.webhook_claim_ms < 2 * self.webhook_timeout_ms || self.webhook_claim_ms > 86_400_000
        {
            return Err(
                "--webhook-claim-ms must be at least twice --webhook-timeout-ms (and at most a day)"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        w: WebhookArgs,
    }

    fn args(flags: &[&str]) -> WebhookArgs {
        Cli::parse_from(std::iter::once("x").chain(flags.iter().copied())).w
    }

    #[test]
    fn off_unless_a_url_is_given() {
        let a = args(&[]);
        assert!(!a.enabled() && a.validate().is_ok());
        assert_eq!(a.selected(), Recording::OFF);
        let on = args(&[
            "--webhook-url",
            "http://h/x",
            "--webhook-secret",
            "0123456789abcdef",
        ]);
        assert!(on.validate().is_ok());
        assert_eq!(on.selected().events, EventSet::all());
        assert_eq!(on.selected().max_len, 10_000);
    }

    #[test]
    fn bad_values_are_refused() {
        let url = [
            "--webhook-url",
            "http://h/x",
            "--webhook-secret",
            "0123456789abcdef",
        ];
        for (extra, flag) in [
            (
                &["--webhook-events", "room_occupied,nope"][..],
                "--webhook-events",
            ),
            (&["--webhook-batch-max", "0"], "--webhook-batch-max"),
            (&["--webhook-timeout-ms", "50"], "--webhook-timeout-ms"),
            (&["--webhook-claim-ms", "9000"], "--webhook-claim-ms"),
            (&["--webhook-queue-len", "0"], "--webhook-queue-len"),
            (
                &["--webhook-backoff-max-ms", "10"],
                "--webhook-backoff-max-ms",
            ),
        ] {
            let all: Vec<&str> = url.iter().chain(extra).copied().collect();
            let e = args(&all).validate().unwrap_err();
            assert!(e.contains(flag), "{e}");
        }
        let e = args(&["--webhook-url", "ftp://h"]).validate().unwrap_err();
        assert!(e.contains("--webhook-url"), "{e}");
        let e = args(&["--webhook-url", "http://h", "--webhook-secret", "short"])
            .validate()
            .unwrap_err();
        assert!(e.contains("--webhook-secret"), "{e}");
        let some = args(&[&url[..], &["--webhook-events", "user_offline"]].concat());
        assert!(some.records(EventName::UserOffline) && !some.records(EventName::RoomVacated));
    }
}
