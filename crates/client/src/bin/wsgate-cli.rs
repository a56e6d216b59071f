//! `wsgate-cli`: talk to a wsgate gateway from the command line.
//!
//! ```text
//! wsgate-cli connect                     print every frame as it comes
//! wsgate-cli join ROOM                   join and print what the room says
//! wsgate-cli send ROOM TEXT              send one message, print its id
//! wsgate-cli tail ROOM [--json]          follow a room (reconnects and resumes)
//! wsgate-cli direct USER TEXT            send a direct message
//! wsgate-cli members ROOM [--limit N]    list a room's members (pages to the end)
//! ```
//!
//! Tokens: `--token JWT`, or `--token-file PATH`, read again before every connection
//! and when the gateway asks for a refresh (`tail` then follows the file's renewals
//! without reconnecting).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use wsgate_client::reconnect::{compare_ids, Event, GetToken, Options, Reconnecting};
use wsgate_client::Client;

#[derive(Parser)]
#[command(name = "wsgate-cli", version, about = "Talk to a wsgate gateway")]
struct Cli {
    /// The gateway's WebSocket URL.
    #[arg(long, env = "WSGATE_URL", default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// A token (when the gateway requires them).
    #[arg(long, env = "WSGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the token, read before every connection and refresh (keep it
    /// current, and `tail` takes each new token without reconnecting).
    #[arg(long, env = "WSGATE_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<PathBuf>,
    /// Development identity: user id.
    #[arg(long, default_value = "cli")]
    user_id: String,
    /// Development identity: display name.
    #[arg(long)]
    username: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect and print every frame.
    Connect,
    /// Join a room and print what it says.
    Join {
        /// The room.
        room: String,
    },
    /// Send one message to a room and print its id.
    Send {
        /// The room.
        room: String,
        /// The text.
        text: String,
    },
    /// Follow a room, reconnecting and resuming exactly.
    Tail {
        /// The room.
        room: String,
        /// One JSON frame per line (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Send a direct message to every session of a user.
    Direct {
        /// The recipient.
        user: String,
        /// The text.
        text: String,
    },
    /// List a room's members, paging to the end: one `user_id<TAB>username` per line,
    /// then `count: N` (the room's distinct users).
    Members {
        /// The room (membership is not needed).
        room: String,
        /// Users per page (1-1000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Stop after this many users.
        #[arg(long, default_value_t = 1_000_000)]
        max: usize,
    },
}

/// The token in `path` (surrounding white space trimmed).
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--token-file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("--token-file {} is empty", path.display());
    }
    Ok(token.to_owned())
}

fn url(cli: &Cli, token: Option<&str>) -> String {
    let sep = if cli.url.contains('?') { '&' } else { '?' };
    let mut q = Vec::new();
    if let Some(t) = token {
        q.push(format!("token={}", enc(t)));
    } else {
        q.push(format!("user_id={}", enc(&cli.user_id)));
        if let Some(n) = &cli.username {
            q.push(format!("username={}", enc(n)));
        }
    }
    format!("{}{sep}{}", cli.url, q.join("&"))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn human(f: &Value) -> String {
    match f["type"].as_str() {
        Some("message") => format!(
            "[{}] {}: {}",
            f["room"].as_str().unwrap_or(""),
            f["username"].as_str().unwrap_or(""),
            f["content"].as_str().unwrap_or("")
        ),
        Some("direct") => format!(
            "(direct) {}: {}",
            f["from"]["username"].as_str().unwrap_or(""),
            f["content"].as_str().unwrap_or("")
        ),
        Some("presence") => format!(
            "* {} {}s {}",
            f["user"]["username"].as_str().unwrap_or(""),
            f["event"].as_str().unwrap_or(""),
            f["room"].as_str().unwrap_or("")
        ),
        _ => f.to_string(),
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Sends `frame` with a ref and waits for its `ack` (or error).
async fn acked(c: &mut Client, frame: Value) -> anyhow::Result<Value> {
    c.send(&frame).await?;
    loop {
        let f = c.recv(WAIT).await?;
        match f["type"].as_str() {
            Some("ack") if f["ref"] == "cli" => return Ok(f),
            Some("error") if f["ref"] == "cli" => bail!("{}: {}", f["code"], f["message"]),
            _ => {}
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(path)) => Some(read_token(path)?),
        (None, None) => None,
    };
    let url = url(&cli, token.as_deref());
    match &cli.command {
        Command::Connect | Command::Join { .. } => {
            let mut c = Client::connect(&url).await.context("connect")?;
            if let Command::Join { room } = &cli.command {
                c.send(&json!({"type":"join","room":room})).await?;
            }
            loop {
                match c.recv(Duration::from_secs(3600)).await {
                    Ok(f) => println!("{f}"),
                    Err(wsgate_client::Error::Timeout) => continue,
                    Err(e) => bail!("{e}"),
                }
            }
        }
        Command::Send { room, text } => {
            let mut c = Client::connect(&url).await.context("connect")?;
            c.send(&json!({"type":"join","room":room})).await?;
            c.recv_type("joined", WAIT).await?;
            let ack = acked(
                &mut c,
                json!({"type":"message","room":room,"content":text,"ref":"cli"}),
            )
            .await?;
            println!("{}", ack["id"].as_str().unwrap_or_default());
            let _ = c.close().await;
        }
        Command::Direct { user, text } => {
            let mut c = Client::connect(&url).await.context("connect")?;
            let ack = acked(
                &mut c,
                json!({"type":"direct","to":user,"content":text,"ref":"cli"}),
            )
            .await?;
            println!("{}", ack["id"].as_str().unwrap_or_default());
            let _ = c.close().await;
        }
        Command::Members { room, limit, max } => {
            let mut c = Client::connect(&url).await.context("connect")?;
            let all = c
                .all_members(room, *limit, *max, WAIT)
                .await
                .map_err(|e| anyhow::anyhow!("members {room}: {e}"))?;
            let mut out = String::new();
            for m in &all.members {
                out.push_str(&format!("{}\t{}\n", m.user_id, m.username));
            }
            out.push_str(&format!("count: {}\n", all.count));
            print!("{out}");
            if !all.complete {
                eprintln!(
                    "wsgate-cli: stopped after {} users (--max); the room has {}",
                    all.members.len(),
                    all.count
                );
            }
            let _ = c.close().await;
        }
        Command::Tail { room, json } => {
            let get_token = cli.token_file.clone().map(|path| {
                GetToken::new(move || {
                    let path = path.clone();
                    async move {
                        tokio::task::spawn_blocking(move || read_token(&path))
                            .await?
                            .map_err(Into::into)
                    }
                })
            });
            let options = Options {
                get_token,
                ..Options::default()
            };
            let mut c = Reconnecting::start(&url, options);
            c.send(json!({"type":"join","room":room}))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let print = |f: &Value| {
                if *json {
                    println!("{f}");
                } else {
                    println!("{}", human(f));
                }
            };
            // The newest id printed and the room's epoch: a resync's reload prints what
            // was not printed yet (all of it in a new epoch).
            let mut shown: Option<String> = None;
            let mut epoch: Option<String> = None;
            let mut new_epoch = false;
            let reload_ref = format!("resync:{room}");
            while let Some(ev) = c.next().await {
                match ev {
                    Event::Frame(f) if f["type"] == "message" || f["type"] == "publish" => {
                        print(&f);
                        shown = f["id"].as_str().map(String::from).or(shown);
                    }
                    Event::Frame(f) if f["type"] == "joined" => {
                        epoch = f["epoch"].as_str().map(String::from);
                    }
                    Event::Frame(f) if f["type"] == "history" && f["ref"] == reload_ref.as_str() => {
                        for m in f["messages"].as_array().into_iter().flatten() {
                            let id = m["id"].as_str().unwrap_or_default();
                            let newer = shown.as_deref().and_then(|s| compare_ids(id, s));
                            if new_epoch || shown.is_none() || newer == Some(Ordering::Greater) {
                                print(m);
                                shown = Some(id.to_owned());
                            }
                        }
                    }
                    Event::Frame(f) if f["type"] == "reconnect" => eprintln!(
                        "wsgate-cli: the server is draining; reconnecting in {} ms{}",
                        f["delay_ms"],
                        f["url"].as_str().map(|u| format!(" to {u}")).unwrap_or_default()
                    ),
                    Event::Frame(_) | Event::Open => {}
                    Event::Reconnecting(d) => eprintln!("wsgate-cli: reconnecting in {d:?}"),
                    Event::NotRecovered(r) => eprintln!("wsgate-cli: {r}: messages may have been missed (history no longer reaches)"),
                    Event::Resync { room, epoch: e, last_id } => {
                        eprintln!(
                            "wsgate-cli: {room}: the server lost messages (resync); reloading history up to {}",
                            last_id.as_deref().unwrap_or("the start")
                        );
                        new_epoch = epoch.as_deref() != Some(e.as_str());
                        epoch = Some(e);
                    }
                    Event::RefreshFailed(why) => {
                        eprintln!("wsgate-cli: token refresh failed ({why}); reconnecting")
                    }
                    Event::Closed(why) => bail!("{why}"),
                }
            }
        }
    }
    Ok(())
}
