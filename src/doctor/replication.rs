//! `seckill doctor`'s replication check: does `--redis-wait` fit the master's replicas?
//!
//! With replicas and `--redis-wait 0`, an order is acknowledged once the master has it; if the
//! master fails before a replica got it, the promoted replica does not have it, and its stock is
//! sold again. With more replicas required than are connected, every purchase answers 503.
//! The master is the `--redis` server, the one the Sentinels name, or each master among the
//! cluster seeds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use fred::types::config::ServerConfig;

use super::Check;
use crate::store::redis::{parse_url, ReplicaWait};

/// Longest reply read (an `INFO replication` is well under 1 KiB per replica).
const MAX_REPLY: usize = 64 << 10;

/// The check's name in doctor's output.
const NAME: &str = "replication";

/// Checks `wait` against the replicas of the master(s) `url` leads to.
pub fn check(url: &str, wait: ReplicaWait) -> Check {
    let config = match parse_url(url) {
        Ok(config) => config,
        Err(error) => return Check::fail(NAME, error, "fix --redis"),
    };
    let auth = config.password.clone().map(|password| {
        let user = config.username.clone().unwrap_or_else(|| "default".into());
        (user, password)
    });
    let masters: Vec<String> = match &config.server {
        ServerConfig::Sentinel {
            hosts,
            service_name,
            ..
        } => {
            let asked = hosts.iter().find_map(|sentinel| {
                let addr = format!("{}:{}", sentinel.host, sentinel.port);
                let reply = command(
                    &addr,
                    None,
                    &["SENTINEL", "get-master-addr-by-name", service_name],
                )
                .ok()?;
                let mut parts = reply.lines();
                Some(format!("{}:{}", parts.next()?, parts.next()?))
            });
            match asked {
                Some(master) => vec![master],
                None => {
                    return Check::warn(
                        NAME,
                        format!("no Sentinel named the master {service_name:?}"),
                        "check the Sentinels and the master name in --redis",
                    )
                }
            }
        }
        other => other
            .hosts()
            .iter()
            .map(|server| format!("{}:{}", server.host, server.port))
            .collect(),
    };
    let mut found = Vec::new();
    for addr in &masters {
        match command(addr, auth.as_ref(), &["INFO", "replication"]) {
            Ok(info) if field(&info, "role").as_deref() == Some("master") => {
                let replicas = field(&info, "connected_slaves")
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(0);
                found.push((addr.clone(), replicas));
            }
            // A cluster seed that is a replica: its master is checked through its own seed.
            Ok(_) => {}
            Err(error) => {
                return Check::warn(
                    NAME,
                    format!("{addr}: cannot read INFO replication: {error}"),
                    "check that Redis answers (see the redis check)",
                )
            }
        }
    }
    verdict(&found, wait)
}

/// The verdict for the masters found, as (address, connected replicas).
fn verdict(masters: &[(String, u32)], wait: ReplicaWait) -> Check {
    let Some(fewest) = masters.iter().map(|(_, replicas)| *replicas).min() else {
        return Check::warn(
            NAME,
            "no master found among the --redis servers",
            "point --redis at the master, its Sentinels or the cluster",
        );
    };
    let listing = masters
        .iter()
        .map(|(addr, replicas)| format!("{addr} has {replicas} replica(s)"))
        .collect::<Vec<_>>()
        .join(", ");
    let wanted = wait.replicas;
    if wanted > fewest {
        return Check::fail(
            NAME,
            format!("--redis-wait {wanted} but {listing}: every purchase would answer 503"),
            format!(
                "--redis-wait {fewest} or fewer, or connect more replicas (min-replicas-to-write {wanted})"
            ),
        );
    }
    if wanted == 0 && fewest > 0 {
        return Check::warn(
            NAME,
            format!(
                "--redis-wait 0 and {listing}: an order is acknowledged before any replica has it, \
                 so a failover can lose acknowledged orders and sell their stock again"
            ),
            "--redis-wait 1 (and min-replicas-to-write 1, min-replicas-max-lag 10 on the master)",
        );
    }
    if wanted == 0 {
        return Check::pass(
            NAME,
            format!("{listing}: a master failure loses what it did not persist (see the README)"),
        );
    }
    Check::pass(
        NAME,
        format!(
            "--redis-wait {wanted} (within {} ms); {listing}",
            wait.timeout.as_millis()
        ),
    )
}

/// `name:value` from an INFO reply.
fn field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (key, value) = line.trim().split_once(':')?;
        (key == name).then(|| value.to_owned())
    })
}

/// One command on a fresh connection (after `AUTH`, if any). A bulk reply comes back as its
/// text, an array as its elements one per line.
fn command(addr: &str, auth: Option<&(String, String)>, args: &[&str]) -> Result<String, String> {
    let target = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let stream =
        TcpStream::connect_timeout(&target, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    if let Some((user, password)) = auth {
        send(&mut writer, &["AUTH", user, password])?;
        read(&mut reader, 0)?;
    }
    send(&mut writer, args)?;
    read(&mut reader, 0)
}

fn send(writer: &mut TcpStream, args: &[&str]) -> Result<(), String> {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    writer.write_all(out.as_bytes()).map_err(|e| e.to_string())
}

/// One reply; `depth` bounds how deeply arrays may nest (the replies read here nest once).
fn read(reader: &mut BufReader<TcpStream>, depth: usize) -> Result<String, String> {
    let mut line = String::new();
    reader
        .by_ref()
        .take(MAX_REPLY as u64)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(rest.to_owned()),
        "$" => {
            let length: i64 = rest.parse().map_err(|_| format!("bad reply {line:?}"))?;
            let Ok(length) = usize::try_from(length) else {
                return Err("nil reply".into());
            };
            if length > MAX_REPLY {
                return Err(format!("reply of {length} bytes is too long"));
            }
            let mut body = vec![0; length + 2];
            reader.read_exact(&mut body).map_err(|e| e.to_string())?;
            body.truncate(length);
            String::from_utf8(body).map_err(|e| e.to_string())
        }
        "*" if depth < 2 => {
            let count: i64 = rest.parse().map_err(|_| format!("bad reply {line:?}"))?;
            let Ok(count) = usize::try_from(count) else {
                return Err("nil reply".into());
            };
            let items: Result<Vec<String>, String> = (0..count.min(64))
                .map(|_| read(reader, depth + 1))
                .collect();
            Ok(items?.join("\n"))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    fn wait(replicas: u32) -> ReplicaWait {
        ReplicaWait {
            replicas,
            ..ReplicaWait::default()
        }
    }

    #[test]
    fn verdicts() {
        let one = [("m:1".to_owned(), 1)];
        assert_eq!(verdict(&one, wait(0)).verdict, Verdict::Warn);
        assert_eq!(verdict(&one, wait(1)).verdict, Verdict::Pass);
        assert_eq!(verdict(&one, wait(2)).verdict, Verdict::Fail);
        let none = [("m:1".to_owned(), 0)];
        assert_eq!(verdict(&none, wait(0)).verdict, Verdict::Pass);
        assert_eq!(verdict(&none, wait(1)).verdict, Verdict::Fail);
        assert_eq!(verdict(&[], wait(1)).verdict, Verdict::Warn);
    }
}
