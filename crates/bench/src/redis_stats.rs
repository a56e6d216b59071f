//! Redis `INFO commandstats` over a plain TCP connection (RESP, no client library):
//! the commands a scenario cost, per command, between two snapshots.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Calls per command (`cmdstat_evalsha` → `evalsha`).
pub(crate) type Calls = BTreeMap<String, u64>;

/// `host:port` of a `redis://host:port[/db]` URL.
fn addr(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| anyhow::anyhow!("--redis-url must be redis://HOST:PORT"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    Ok(if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:6379")
    })
}

/// The `calls=` of every `cmdstat_*` line of an `INFO commandstats` text.
pub(crate) fn parse(info: &str) -> Calls {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.trim().strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// A snapshot of the calls per command of the Redis at `url`.
pub(crate) async fn snapshot(url: &str) -> anyhow::Result<Calls> {
    let run = async {
        let stream = TcpStream::connect(addr(url)?).await?;
        let mut r = BufReader::new(stream);
        r.get_mut()
            .write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
            .await?;
        let mut header = String::new();
        r.read_line(&mut header).await?;
        let len: usize = header
            .trim()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("unexpected INFO answer: {}", header.trim()))?;
        let mut body = vec![0u8; len + 2];
        r.read_exact(&mut body).await?;
        Ok::<_, anyhow::Error>(parse(&String::from_utf8_lossy(&body)))
    };
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .map_err(|_| anyhow::anyhow!("redis INFO timed out"))?
}

/// The calls between `before` and `after`, in total and per `per` (e.g. joins), with
/// the 8 commands that cost most.
pub(crate) fn report(before: &Calls, after: &Calls, per: u64) -> Value {
    let mut diff: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .filter(|(k, v)| *v > 0 && k != "info")
        .collect();
    diff.sort_by_key(|d| std::cmp::Reverse(d.1));
    let total: u64 = diff.iter().map(|(_, v)| v).sum();
    let per_f = |v: u64| if per > 0 { v as f64 / per as f64 } else { 0.0 };
    json!({
        "commands": total,
        "commands_per_join": per_f(total),
        "top": diff.iter().take(8).map(|(k, v)| json!({"command": k, "calls": v, "per_join": per_f(*v)})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commandstats() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=5,usec_per_call=0.5,rejected_calls=0,failed_calls=0\r\ncmdstat_publish:calls=3,usec=1\r\n";
        let c = parse(info);
        assert_eq!(c.get("evalsha"), Some(&10));
        assert_eq!(c.get("publish"), Some(&3));
        let mut after = c.clone();
        *after.get_mut("evalsha").unwrap() += 20;
        let r = report(&c, &after, 10);
        assert_eq!(r["commands"], 20);
        assert_eq!(r["commands_per_join"], 2.0);
        assert_eq!(addr("redis://127.0.0.1:7000/0").unwrap(), "127.0.0.1:7000");
        assert_eq!(addr("redis://h").unwrap(), "h:6379");
    }
}
