//! The token flags: which keys verify client tokens (an HS256 secret, public key files,
//! a JWKS URL) and which claims tokens must carry. Flattened into [`super::Config`].

use std::path::PathBuf;

/// Least and most `--jwks-min-refresh-s`.
const MIN_REFRESH_BOUNDS: (u64, u64) = (1, 3600);
/// Most `--jwks-refresh-s`: a day.
const MAX_REFRESH_S: u64 = 86_400;
/// Most `--refresh-notice-s`: a day.
const MAX_REFRESH_NOTICE_S: u64 = 86_400;

/// How client tokens are verified. With none of `--jwt-secret`, `--jwt-public-key` and
/// `--jwks-url`, the node runs in development mode (no tokens).
#[derive(Debug, Clone, clap::Args)]
pub struct JwtArgs {
    /// HS256 secret for client tokens. May be combined with public keys: HS256 tokens
    /// are then checked with it, RS/ES tokens with the public keys.
    #[arg(long, env = "WSGATE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key file (RSA: RS256; EC P-256: ES256; P-384: ES384; Ed25519: EdDSA),
    /// or a JWK / JWKS JSON file. Repeatable (environment: comma-separated), e.g. the
    /// old and the new key during a rotation. Read at start.
    #[arg(long, env = "WSGATE_JWT_PUBLIC_KEY", value_delimiter = ',')]
    pub jwt_public_key: Vec<PathBuf>,

    /// URL (http or https) of a JWKS whose keys verify tokens: fetched at start, cached,
    /// refreshed periodically and when a token names an unknown `kid`.
    #[arg(long, env = "WSGATE_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// Least time between two JWKS fetches, whatever asks for them (tokens with unknown
    /// `kid`s, the periodic refresh, retries after a failure).
    #[arg(long, env = "WSGATE_JWKS_MIN_REFRESH_S", default_value_t = 30)]
    pub jwks_min_refresh_s: u64,

    /// Most time between two JWKS fetches (a shorter `Cache-Control: max-age` wins, down
    /// to `--jwks-min-refresh-s`).
    #[arg(long, env = "WSGATE_JWKS_REFRESH_S", default_value_t = 300)]
    pub jwks_refresh_s: u64,

    /// When set, tokens must carry this `iss`.
    #[arg(long, env = "WSGATE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// When set, tokens must carry this `aud` (a string, or a list holding it); when
    /// unset, a token's `aud` is not checked.
    #[arg(long, env = "WSGATE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// A WebSocket session is sent `refresh_needed` this many seconds before its token
    /// expires (once per token; at once when less is left), so that it can `refresh`
    /// without reconnecting; 0: never.
    #[arg(long, env = "WSGATE_REFRESH_NOTICE_S", default_value_t = 30)]
    pub refresh_notice_s: u64,
}

impl JwtArgs {
    /// Whether clients must present tokens (any key is configured).
    pub fn tokens_required(&self) -> bool {
        self.jwt_secret.is_some() || !self.jwt_public_key.is_empty() || self.jwks_url.is_some()
    }

    /// Checks values that clap cannot (the key files are read by the authenticator).
    ///
    /// # Errors
    /// A message naming the bad flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.jwt_issuer.as_deref().is_some_and(str::is_empty)
            || self.jwt_audience.as_deref().is_some_and(str::is_empty)
        {
            return Err("--jwt-issuer and --jwt-audience must not be empty when given".into());
        }
        if self.jwt_secret.as_deref().is_some_and(str::is_empty) {
            return Err(
                "--jwt-secret must not be empty (leave it unset for development mode)".into(),
            );
        }
        if self.jwt_public_key.iter().any(|p| p.as_os_str().is_empty()) {
            return Err("--jwt-public-key must name a file".into());
        }
        if let Some(url) = &self.jwks_url {
            if crate::http_client::parse_url(url).is_err() {
                return Err("--jwks-url must be an http:// or https:// URL".into());
            }
        }
        let (lo, hi) = MIN_REFRESH_BOUNDS;
        if !(lo..=hi).contains(&self.jwks_min_refresh_s) {
            return Err(format!(
                "--jwks-min-refresh-s must be between {lo} and {hi}"
            ));
        }
        if self.jwks_refresh_s < self.jwks_min_refresh_s || self.jwks_refresh_s > MAX_REFRESH_S {
            return Err(format!(
                "--jwks-refresh-s must be between --jwks-min-refresh-s and {MAX_REFRESH_S}"
            ));
        }
        if self.refresh_notice_s > MAX_REFRESH_NOTICE_S {
            return Err(format!(
                "--refresh-notice-s must be at most {MAX_REFRESH_NOTICE_S} (a day; 0: no notice)"
            ));
        }
        Ok(())
    }
}
