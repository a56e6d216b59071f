//! The back-end hook flags: where the connect, join and publish hooks are, the secret
//! that signs their calls, and how a hook that fails is treated. Flattened into
//! [`super::Config`]; the hooks themselves are [`crate::hooks`].

/// Least `--hook-secret` length, in bytes.
const MIN_SECRET_BYTES: usize = 16;
/// Bounds of `--hook-timeout-ms`.
const TIMEOUT_MS: (u64, u64) = (10, 60_000);
/// Bounds of `--hook-breaker-cooldown-ms`.
const COOLDOWN_MS: (u64, u64) = (10, 3_600_000);
/// Most `--hook-max-in-flight` and `--hook-breaker-failures`.
const MAX_COUNT: u64 = 100_000;

/// What a hook call that gets no usable answer (timeout, refused connection, an error
/// status, an answer that does not parse, the breaker open, too many calls in flight)
/// decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailPolicy {
    /// Let it through as if the hook were not configured.
    Open,
    /// Refuse it: `unavailable` (HTTP 503 for a connect), which clients retry.
    Closed,
}

/// The hook endpoints and their policies. No URL: no hook, and nothing changes.
#[derive(Debug, Clone, clap::Args)]
pub struct HookArgs {
    /// Connect hook (http or https URL): called during the `/ws` handshake and before
    /// an `/events` stream starts; allows, refuses (403) or names the user and the
    /// private rooms granted.
    #[arg(long, env = "WSGATE_HOOK_CONNECT_URL")]
    pub hook_connect_url: Option<String>,

    /// Join hook: called before a session joins a room (each room of an `/events`
    /// stream); allows or refuses (`forbidden`).
    #[arg(long, env = "WSGATE_HOOK_JOIN_URL")]
    pub hook_join_url: Option<String>,

    /// Publish hook: called before a client's `message` is stored; allows, refuses
    /// (`forbidden`) or replaces the content.
    #[arg(long, env = "WSGATE_HOOK_PUBLISH_URL")]
    pub hook_publish_url: Option<String>,

    /// Secret of the HMAC-SHA256 signature every hook call carries (at least 16
    /// bytes); required when any hook URL is set.
    #[arg(long, env = "WSGATE_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<String>,

    /// Deadline of one hook call, in ms: waiting for a free call slot, connecting,
    /// sending and reading the answer (a connect hook: at most the handshake timeout).
    #[arg(long, env = "WSGATE_HOOK_TIMEOUT_MS", default_value_t = 1000)]
    pub hook_timeout_ms: u64,

    /// What a connect hook that fails decides (`closed`: 503).
    #[arg(
        long,
        env = "WSGATE_HOOK_CONNECT_FAIL",
        value_enum,
        default_value = "closed"
    )]
    pub hook_connect_fail: FailPolicy,

    /// What a join hook that fails decides (`closed`: `unavailable`).
    #[arg(
        long,
        env = "WSGATE_HOOK_JOIN_FAIL",
        value_enum,
        default_value = "closed"
    )]
    pub hook_join_fail: FailPolicy,

    /// What a publish hook that fails decides (`closed`: `unavailable`).
    #[arg(
        long,
        env = "WSGATE_HOOK_PUBLISH_FAIL",
        value_enum,
        default_value = "closed"
    )]
    pub hook_publish_fail: FailPolicy,

    /// Calls one hook may have in flight on this node; a call that finds none free
    /// within its deadline fails (`saturated`).
    #[arg(long, env = "WSGATE_HOOK_MAX_IN_FLIGHT", default_value_t = 256)]
    pub hook_max_in_flight: usize,

    /// Consecutive failed calls after which a hook's circuit breaker opens: its calls
    /// fail at once, without reaching the back end, until the cool-down ends.
    #[arg(long, env = "WSGATE_HOOK_BREAKER_FAILURES", default_value_t = 5)]
    pub hook_breaker_failures: u32,

    /// How long an open breaker stays open before one probe call is let through (its
    /// success closes the breaker, its failure opens it for as long again), in ms.
    #[arg(long, env = "WSGATE_HOOK_BREAKER_COOLDOWN_MS", default_value_t = 5000)]
    pub hook_breaker_cooldown_ms: u64,
}

impl HookArgs {
    /// Whether any hook is configured.
    pub fn any(&self) -> bool {
        self.hook_connect_url.is_some()
            || self.hook_join_url.is_some()
            || self.hook_publish_url.is_some()
    }

    /// Checks values that clap cannot.
    ///
    /// # Errors
    /// A message naming the bad flag.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, url) in [
            ("--hook-connect-url", &self.hook_connect_url),
            ("--hook-join-url", &self.hook_join_url),
            ("--hook-publish-url", &self.hook_publish_url),
        ] {
            if let Some(url) = url {
                if crate::http_client::parse_url(url).is_err() {
                    return Err(format!("{flag} must be an http:// or https:// URL"));
                }
            }
        }
        let secret = self.hook_secret.as_deref().unwrap_or("");
        if self.any() && secret.is_empty() {
            return Err(
                "--hook-secret is required with a hook URL: every call is signed with it".into(),
            );
        }
        if !secret.is_empty() && secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "--hook-secret must be at least {MIN_SECRET_BYTES} bytes (e.g. openssl rand -hex 32)"
            ));
        }
        let (lo, hi) = TIMEOUT_MS;
        if !(lo..=hi).contains(&self.hook_timeout_ms) {
            return Err(format!("--hook-timeout-ms must be between {lo} and {hi}"));
        }
        let (lo, hi) = COOLDOWN_MS;
        if !(lo..=hi).contains(&self.hook_breaker_cooldown_ms) {
            return Err(format!(
                "--hook-breaker-cooldown-ms must be between {lo} and {hi}"
            ));
        }
        if !(1..=MAX_COUNT).contains(&(self.hook_max_in_flight as u64)) {
            return Err(format!(
                "--hook-max-in-flight must be between 1 and {MAX_COUNT}"
            ));
        }
        if !(1..=MAX_COUNT).contains(&u64::from(self.hook_breaker_failures)) {
            return Err(format!(
                "--hook-breaker-failures must be between 1 and {MAX_COUNT}"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    fn load(flags: &[&str]) -> Result<crate::Config, String> {
        crate::Config::try_parse_from(std::iter::once("wsgate").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())
            .and_then(crate::Config::load)
    }

    #[test]
    fn a_hook_needs_a_secret_and_bounds_hold() {
        let secret = "0123456789abcdef";
        let ok = load(&[
            "--hook-join-url",
            "http://127.0.0.1:9/join",
            "--hook-secret",
            secret,
        ])
        .unwrap();
        assert!(ok.hooks.any());
        assert_eq!(ok.hooks.hook_join_fail, super::FailPolicy::Closed);
        assert!(load(&["--hook-connect-url", "http://127.0.0.1:9/c"])
            .unwrap_err()
            .contains("--hook-secret is required"));
        assert!(
            load(&["--hook-publish-url", "http://x/p", "--hook-secret", "short"])
                .unwrap_err()
                .contains("at least 16 bytes")
        );
        assert!(
            load(&["--hook-join-url", "ftp://x/j", "--hook-secret", secret])
                .unwrap_err()
                .contains("--hook-join-url")
        );
        for bad in [
            ["--hook-timeout-ms", "0"],
            ["--hook-timeout-ms", "60001"],
            ["--hook-max-in-flight", "0"],
            ["--hook-breaker-failures", "0"],
            ["--hook-breaker-cooldown-ms", "1"],
        ] {
            assert!(load(&bad).is_err(), "{bad:?}");
        }
        // Fail policies parse; no hook URL: nothing is required.
        let open = load(&["--hook-connect-fail", "open", "--hook-publish-fail", "open"]).unwrap();
        assert_eq!(open.hooks.hook_connect_fail, super::FailPolicy::Open);
        assert!(!open.hooks.any());
        assert!(load(&["--hook-join-fail", "maybe"]).is_err());
    }
}
