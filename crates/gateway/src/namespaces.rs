//! Namespaces: per-namespace room options from the config file (`--config`, TOML),
//! with every option a namespace leaves out taken from the global flags (the default
//! namespace's). A room's namespace is the part of its name before the first `:`
//! (`live:final` is in `live`); a room without `:` is in the default namespace. The
//! namespace `private` exists even when the file does not list it, private.
//!
//! ```toml
//! [namespaces.live]
//! presence = "count"          # full | count | off
//! presence_max_members = 1000
//! history_len = 100
//! history_ttl = "1h"          # a duration, or whole seconds
//! client_publish = false
//! private = false
//! max_members = 100000
//! webhook_client_messages = false   # client_message webhook events
//! ```

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use wsgate_broker::{RoomPolicy, RoomRules};
use wsgate_protocol::server::PresenceMode;

/// Largest `history_len` a namespace (or `--history-len`) may set.
pub const MAX_HISTORY_LEN: usize = 1_000_000;

/// Longest `history_ttl` a namespace (or `--history-ttl-s`) may set, in seconds: 100
/// years, far below what Redis `EXPIRE` or a clock can overflow on.
pub const MAX_HISTORY_TTL_S: u64 = 100 * 365 * 24 * 3600;

/// The options of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceOptions {
    /// Member lists and events, only a count, or neither.
    pub presence: PresenceMode,
    /// A `full` room past this shows only its count (back at nine tenths).
    pub presence_max_members: u64,
    /// Messages kept per room.
    pub history_len: usize,
    /// A room's history expires this long after its last message.
    pub history_ttl_s: u64,
    /// Whether clients may send `message` (the HTTP API always may publish).
    pub client_publish: bool,
    /// Whether joins need a grant in the token's `rooms` claim.
    pub private: bool,
    /// Most distinct users per room.
    pub max_members: Option<u64>,
    /// Whether clients' messages are sent as `client_message` webhook events.
    pub webhook_client_messages: bool,
}

/// Every namespace's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespaces {
    /// The default namespace's options (the flags').
    default: NamespaceOptions,
    /// Named namespaces.
    named: HashMap<String, NamespaceOptions>,
    /// `--private-room-prefix`: rooms starting with it are private whatever their
    /// namespace says (kept for configurations that set another prefix).
    private_prefix: String,
}

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    namespaces: std::collections::BTreeMap<String, toml::Value>,
}

/// The options a namespace may set.
const KEYS: [&str; 8] = [
    "presence",
    "presence_max_members",
    "history_len",
    "history_ttl",
    "client_publish",
    "private",
    "max_members",
    "webhook_client_messages",
];

/// Whether `name` may name a namespace: 1–64 characters of `[A-Za-z0-9_.-]`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A positive integer option.
fn positive(v: &toml::Value, at: &str) -> Result<u64, String> {
    match v.as_integer() {
        Some(n) if n >= 1 => Ok(n as u64),
        _ => Err(format!("{at} must be a positive integer")),
    }
}

/// A namespace's options over `base`; `private_prefix` is `--private-room-prefix`
/// (when it is `NAME:`, the namespace cannot be made public).
fn options(
    name: &str,
    table: &toml::Table,
    base: &NamespaceOptions,
    private_prefix: Option<&str>,
) -> Result<NamespaceOptions, String> {
    let mut o = base.clone();
    if name == "private" {
        o.private = true;
    }
    for (key, v) in table {
        let at = format!("namespaces.{name}.{key}");
        match key.as_str() {
            "presence" => {
                o.presence = v
                    .as_str()
                    .ok_or_else(|| format!("{at} must be \"full\", \"count\" or \"off\""))?
                    .parse()
                    .map_err(|e| format!("{at}: {e}"))?;
            }
            "presence_max_members" => o.presence_max_members = positive(v, &at)?,
            "history_len" => {
                let n = positive(v, &at)?;
                if n > MAX_HISTORY_LEN as u64 {
                    return Err(format!("{at} must be at most {MAX_HISTORY_LEN}"));
                }
                o.history_len = n as usize;
            }
            "history_ttl" => {
                let secs = match v {
                    toml::Value::Integer(n) if *n >= 1 => *n as u64,
                    toml::Value::String(s) => humantime::parse_duration(s)
                        .ok()
                        .map(|d| d.as_secs())
                        .filter(|s| *s >= 1)
                        .ok_or_else(|| {
                            format!("{at} must be a duration of at least 1s (e.g. \"1h\")")
                        })?,
                    _ => {
                        return Err(format!(
                            "{at} must be a duration (e.g. \"1h\") or a positive number of seconds"
                        ))
                    }
                };
                if secs > MAX_HISTORY_TTL_S {
                    return Err(format!(
                        "{at} must be at most {MAX_HISTORY_TTL_S} seconds (100 years)"
                    ));
                }
                o.history_ttl_s = secs;
            }
            "client_publish" => {
                o.client_publish = v
                    .as_bool()
                    .ok_or_else(|| format!("{at} must be true or false"))?
            }
            "private" => {
                o.private = v
                    .as_bool()
                    .ok_or_else(|| format!("{at} must be true or false"))?;
                let prefix = private_prefix.filter(|p| p.strip_suffix(':') == Some(name));
                if let (false, Some(p)) = (o.private, prefix) {
                    return Err(format!(
                        "{at} = false has no effect: --private-room-prefix {p:?} keeps these rooms private"
                    ));
                }
            }
            "max_members" => o.max_members = Some(positive(v, &at)?),
            "webhook_client_messages" => {
                o.webhook_client_messages = v
                    .as_bool()
                    .ok_or_else(|| format!("{at} must be true or false"))?;
            }
            _ => return Err(format!("unknown option {at} (known: {})", KEYS.join(", "))),
        }
    }
    Ok(o)
}

impl Namespaces {
    /// The default namespace's options (the flags'), and the implicit `private`
    /// when `private_prefix` is the default `private:`.
    fn with_default(default: NamespaceOptions, private_prefix: &str) -> Self {
        let mut named = HashMap::new();
        if private_prefix == "private:" {
            named.insert(
                "private".to_owned(),
                NamespaceOptions {
                    private: true,
                    ..default.clone()
                },
            );
        }
        Namespaces {
            default,
            named,
            private_prefix: private_prefix.to_owned(),
        }
    }

    /// The default namespace's options, the implicit `private`, and the namespaces of
    /// the config file at `file` if one is given.
    ///
    /// # Errors
    /// A message naming the file, or the key, that is wrong.
    pub fn load(
        default: NamespaceOptions,
        private_prefix: &str,
        file: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let mut ns = Self::with_default(default, private_prefix);
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--config {}: {e}", path.display()))?;
            ns.add_file(&text)
                .map_err(|e| format!("--config {}: {e}", path.display()))?;
        }
        Ok(ns)
    }

    /// Adds the namespaces of a config file's text.
    fn add_file(&mut self, text: &str) -> Result<(), String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, table) in &file.namespaces {
            if !valid_name(name) {
                return Err(format!(
                    "namespaces.{name}: a namespace name is 1-64 characters of [A-Za-z0-9_.-]"
                ));
            }
            let toml::Value::Table(table) = table else {
                return Err(format!(
                    "namespaces.{name} must be a table of options ([namespaces.{name}])"
                ));
            };
            let prefix = (!self.private_prefix.is_empty()).then_some(self.private_prefix.as_str());
            let o = options(name, table, &self.default, prefix)?;
            self.named.insert(name.clone(), o);
        }
        Ok(())
    }

    /// The namespace of `room`: the part before its first `:`, if any.
    pub fn namespace_of(room: &str) -> Option<&str> {
        room.split_once(':').map(|(ns, _)| ns)
    }

    /// The options of `room`'s namespace (the default's for a namespace the file does
    /// not list).
    pub fn for_room(&self, room: &str) -> &NamespaceOptions {
        Self::namespace_of(room)
            .and_then(|ns| self.named.get(ns))
            .unwrap_or(&self.default)
    }

    /// Whether joining `room` needs a grant: its namespace is private, or its name
    /// starts with `--private-room-prefix` (kept for configurations that set another
    /// prefix).
    pub fn is_private(&self, room: &str) -> bool {
        self.for_room(room).private
            || (!self.private_prefix.is_empty() && room.starts_with(&self.private_prefix))
    }

    /// What the broker applies to `room`: its namespace's history and presence rules.
    pub fn rules(&self, room: &str) -> RoomRules {
        let o = self.for_room(room);
        RoomRules {
            history_len: o.history_len.max(1),
            history_ttl: Duration::from_secs(o.history_ttl_s.max(1)),
            presence: o.presence,
            presence_max_members: o.presence_max_members.max(1),
            max_members: o.max_members,
        }
    }
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            default: NamespaceOptions {
                presence: PresenceMode::Full,
                presence_max_members: 1000,
                history_len: 1000,
                history_ttl_s: 604_800,
                client_publish: true,
                private: false,
                max_members: None,
                webhook_client_messages: false,
            },
            named: HashMap::new(),
            private_prefix: "private:".into(),
        }
    }
}

impl RoomPolicy for Namespaces {
    fn rules(&self, room: &str) -> RoomRules {
        Namespaces::rules(self, room)
    }
}

#[cfg(test)]
mod tests;
