//! Reading `--redis`: the URL forms operators write, converted to the ones fred's
//! `Config::from_url` reads.
//!
//! - `redis://[USER:PASS@]HOST:PORT`: one server, as fred reads it.
//! - `redis-cluster://HOST:PORT,HOST:PORT,...`: seed nodes of a Redis Cluster (fred spells the
//!   extra seeds `?node=HOST:PORT`).
//! - `redis-sentinel://[USER:PASS@]HOST:PORT[,HOST:PORT...]/SERVICE`: the Sentinels watching the
//!   master named SERVICE (fred spells this `redis-sentinel://HOST:PORT?sentinelServiceName=SERVICE&node=...`,
//!   which is accepted too). The node asks a Sentinel for the current master on every
//!   (re)connection, so after a failover it reconnects to the promoted replica by itself.

use fred::types::config::Config;

/// The schemes `--redis` accepts.
pub const SCHEMES: [&str; 3] = ["redis://", "redis-cluster://", "redis-sentinel://"];

/// Reads `--redis` (see the module docs for the forms).
pub fn parse_url(url: &str) -> Result<Config, String> {
    let fred_url = if let Some(rest) = url.strip_prefix("redis-cluster://") {
        cluster(url, rest)?
    } else if let Some(rest) = url.strip_prefix("redis-sentinel://") {
        sentinel(url, rest)?
    } else {
        url.to_owned()
    };
    Config::from_url(&fred_url).map_err(|error| format!("`redis` {url:?} is not usable: {error}"))
}

/// `HOST:PORT,HOST:PORT?query` → `redis-cluster://HOST:PORT?node=HOST:PORT&query`.
fn cluster(url: &str, rest: &str) -> Result<String, String> {
    let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut nodes = hosts.split(',').map(str::trim).filter(|h| !h.is_empty());
    let first = nodes
        .next()
        .ok_or_else(|| format!("`redis` {url:?} names no cluster node"))?;
    let params: Vec<String> = nodes.map(|node| format!("node={node}")).collect();
    Ok(with_query(
        format!("redis-cluster://{first}"),
        params,
        query,
    ))
}

/// `[AUTH@]HOST:PORT,HOST:PORT/SERVICE?query` →
/// `redis-sentinel://[AUTH@]HOST:PORT/?sentinelServiceName=SERVICE&node=HOST:PORT&query`.
fn sentinel(url: &str, rest: &str) -> Result<String, String> {
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, service) = location.split_once('/').unwrap_or((location, ""));
    // Credentials, if any, precede the first host; `@` cannot occur in a host list otherwise.
    let (auth, hosts) = match authority.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), authority),
    };
    let mut nodes = hosts.split(',').map(str::trim).filter(|h| !h.is_empty());
    let first = nodes
        .next()
        .ok_or_else(|| format!("`redis` {url:?} names no sentinel"))?;
    let mut params: Vec<String> = Vec::new();
    if service.is_empty() {
        if !query.contains("sentinelServiceName=") {
            return Err(format!(
                "`redis` {url:?} names no master: write redis-sentinel://HOST:PORT,.../SERVICE_NAME"
            ));
        }
    } else {
        let valid = service.len() <= 128
            && service
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(format!(
                "`redis` {url:?}: the master name must be 1 to 128 characters from [A-Za-z0-9._-], got {service:?}"
            ));
        }
        params.push(format!("sentinelServiceName={service}"));
    }
    params.extend(nodes.map(|node| format!("node={node}")));
    Ok(with_query(
        format!("redis-sentinel://{auth}{first}/"),
        params,
        query,
    ))
}

fn with_query(mut base: String, mut params: Vec<String>, query: &str) -> String {
    if !query.is_empty() {
        params.push(query.to_owned());
    }
    if !params.is_empty() {
        base.push('?');
        base.push_str(&params.join("&"));
    }
    base
}

#[cfg(test)]
mod tests {
    use super::parse_url;
    use fred::types::config::ServerConfig;

    fn hosts(url: &str) -> Vec<String> {
        let config = parse_url(url).expect("a valid url");
        let mut hosts: Vec<String> = config
            .server
            .hosts()
            .iter()
            .map(|server| format!("{}:{}", server.host, server.port))
            .collect();
        hosts.sort();
        hosts
    }

    #[test]
    fn cluster_urls_take_a_comma_list() {
        assert_eq!(
            hosts("redis-cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"),
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
        );
        assert!(parse_url("redis://127.0.0.1:6379").is_ok());
        assert!(parse_url("redis-cluster://").is_err());
        assert!(parse_url("redis://127.0.0.1:notaport").is_err());
    }

    #[test]
    fn sentinel_urls_take_a_comma_list_and_the_master_name() {
        let url = "redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/seckill-main";
        assert_eq!(hosts(url), ["127.0.0.1:26379", "127.0.0.1:26380"]);
        let config = parse_url(url).expect("a valid url");
        match config.server {
            ServerConfig::Sentinel { service_name, .. } => assert_eq!(service_name, "seckill-main"),
            other => panic!("not a sentinel config: {other:?}"),
        }
        let with_auth = parse_url("redis-sentinel://app:s3cret@10.0.0.1:26379/main")
            .expect("credentials are kept");
        assert_eq!(with_auth.password.as_deref(), Some("s3cret"));
        // fred's own spelling still works.
        assert!(parse_url("redis-sentinel://127.0.0.1:26379?sentinelServiceName=main").is_ok());
        assert!(
            parse_url("redis-sentinel://127.0.0.1:26379").is_err(),
            "no master name"
        );
        assert!(parse_url("redis-sentinel:///main").is_err(), "no sentinel");
        assert!(parse_url("redis-sentinel://127.0.0.1:26379/a&b").is_err());
    }
}
