//! `seckill doctor`: checks the host against what `serve` needs, one line per check (pass, warn
//! or fail, with the fix), and exits non-zero on any failure. It reads the same configuration as
//! `serve`, so the checks are against the shards, backlog, data dir and Redis actually configured.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};

use crate::config::{SecretsSource, ServeConfig};
use crate::shard::fds;

mod data_dir;
mod replication;

/// io_uring buffer memory each shard asks for (what `serve` registers unless memlock is short).
const IO_MEMORY_PER_SHARD: u64 = 10 << 20;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Fine.
    Pass,
    /// Works, but worse than it could.
    Warn,
    /// `serve` will fail or misbehave.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// How it came out.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            verdict: Verdict::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = match self.verdict {
            Verdict::Pass => "pass",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        write!(f, "{verdict:4}  {:<14} {}", self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n      fix: {fix}")?;
        }
        Ok(())
    }
}

/// Runs every check against `config`.
pub fn run(config: &ServeConfig) -> Vec<Check> {
    let mut checks = vec![kernel(), io_uring(), secrets(config)];
    checks.push(memlock(config.shards));
    checks.push(nofile(config));
    checks.push(somaxconn(config.backlog));
    checks.push(cpus(config.shards));
    match &config.redis {
        Some(url) => {
            checks.extend(redis(url));
            checks.push(replication::check(url, config.redis_wait));
        }
        None => checks.push(data_dir::check(&config.data_dir)),
    }
    checks.push(clock_source());
    checks
}

fn kernel() -> Check {
    let release = nix::sys::utsname::uname()
        .map(|uts| uts.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|part| part.parse::<u32>().ok());
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version >= (5, 10) {
        Check::pass("kernel", format!("Linux {release}"))
    } else if version >= (5, 8) {
        Check::warn(
            "kernel",
            format!("Linux {release}: io_uring works but misses later fixes"),
            "run a 5.10 or newer kernel",
        )
    } else {
        Check::fail(
            "kernel",
            format!("Linux {release}: glommio needs 5.8 or newer"),
            "upgrade the kernel to 5.10 or newer",
        )
    }
}

/// Sets up a real ring: a glommio executor on this thread, with a small buffer.
fn io_uring() -> Check {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "0".into());
    let ring = std::thread::spawn(|| {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .make()
            .map(|executor| {
                executor.run(async { glommio::timer::sleep(Duration::from_millis(1)).await })
            })
            .map_err(|error| error.to_string())
    })
    .join();
    match ring {
        Ok(Ok(())) => Check::pass("io_uring", "set up a ring and ran a timer on it"),
        Ok(Err(error)) => Check::fail(
            "io_uring",
            format!("cannot set up a ring: {error} (kernel.io_uring_disabled = {disabled})"),
            "sysctl -w kernel.io_uring_disabled=0, and allow io_uring_setup/io_uring_enter/io_uring_register in any seccomp filter",
        ),
        Err(_) => Check::fail(
            "io_uring",
            "setting up a ring crashed",
            "check kernel.io_uring_disabled and seccomp filters",
        ),
    }
}

fn memlock(shards: usize) -> Check {
    let needed = IO_MEMORY_PER_SHARD * shards as u64 + (1 << 20);
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft == RLIM_INFINITY => Check::pass("memlock", "unlimited"),
        Ok((soft, _)) if soft >= needed => Check::pass(
            "memlock",
            format!("{} MiB covers {shards} shard(s) x 10 MiB io_memory", soft >> 20),
        ),
        Ok((soft, hard)) => Check::warn(
            "memlock",
            format!(
                "{} KiB (hard {} KiB) is under {shards} shard(s) x 10 MiB io_memory: serve will shrink io_uring buffers",
                soft >> 10,
                if hard == RLIM_INFINITY { u64::MAX >> 10 } else { hard >> 10 }
            ),
            "LimitMEMLOCK=infinity in the unit, or tuning/limits.d/90-seckill.conf",
        ),
        Err(error) => Check::warn("memlock", format!("unknown: {error}"), "check ulimit -l"),
    }
}

/// What `serve` will do with RLIMIT_NOFILE (see [`crate::shard::fds`]): leave it, raise the soft
/// limit, or cap connections per shard to what fits beside the descriptor reserve.
fn nofile(config: &ServeConfig) -> Check {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => return Check::warn("nofile", format!("unknown: {error}"), "check ulimit -n"),
    };
    let max = config.max_connections_per_shard;
    let budget = fds::plan(config.shards, max, soft, hard);
    let need = format!(
        "{} shard(s) x {max} connections + {} reserved = {}",
        config.shards,
        fds::reserve(config.shards),
        budget.wanted
    );
    if budget.is_capped(max) {
        return Check::warn(
            "nofile",
            format!(
                "{soft} open files (hard {hard}) is under {need}: serve caps connections at {} per shard",
                budget.per_shard_cap
            ),
            format!(
                "LimitNOFILE={} (or more) in the unit, or tuning/limits.d/90-seckill.conf",
                budget.wanted
            ),
        );
    }
    match budget.raised_from {
        Some(from) => Check::pass(
            "nofile",
            format!(
                "{from} open files; serve raises it to {} for {need}",
                budget.soft
            ),
        ),
        None => Check::pass("nofile", format!("{soft} open files covers {need}")),
    }
}

fn somaxconn(backlog: u32) -> Check {
    let value = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    match value {
        Some(max) if max >= backlog => {
            Check::pass("somaxconn", format!("{max} >= backlog {backlog}"))
        }
        Some(max) => Check::warn(
            "somaxconn",
            format!("{max} < backlog {backlog}: the kernel silently caps the accept queue"),
            format!("sysctl -w net.core.somaxconn={backlog} (tuning/sysctl.d/90-seckill.conf)"),
        ),
        None => Check::warn(
            "somaxconn",
            "cannot read /proc/sys/net/core/somaxconn",
            "check the sysctl by hand",
        ),
    }
}

fn secrets(config: &ServeConfig) -> Check {
    if config.secrets_source == SecretsSource::Configured {
        return Check::pass("secrets", "admin token and token secret set");
    }
    let detail = if config.listen.ip().is_loopback() {
        "not set here: serve would run in dev mode with throwaway secrets".to_owned()
    } else {
        format!(
            "not set here: serve would refuse {} in dev mode (loopback only)",
            config.listen
        )
    };
    Check::warn(
        "secrets",
        detail,
        "set SECKILL_ADMIN_TOKEN and SECKILL_TOKEN_SECRET (systemd: the unit's EnvironmentFile)",
    )
}

fn cpus(shards: usize) -> Check {
    let allowed = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
                .count()
        })
        .unwrap_or(0);
    if shards <= allowed {
        Check::pass(
            "cpus",
            format!("{shards} shard(s) on {allowed} usable CPU(s)"),
        )
    } else {
        Check::warn(
            "cpus",
            format!("{shards} shard(s) but only {allowed} usable CPU(s): shards will share cores"),
            format!("--shards {allowed} or fewer (see tuning/TUNING.md)"),
        )
    }
}

/// Reachability, version and round trip of every node in `url`.
fn redis(url: &str) -> Vec<Check> {
    let hosts: Vec<String> = match url.split_once("://") {
        Some((_, rest)) => rest
            .split(['?', '/'])
            .next()
            .unwrap_or("")
            .split(',')
            .map(|host| {
                host.rsplit('@')
                    .next()
                    .unwrap_or(host)
                    .trim_end_matches('/')
                    .to_owned()
            })
            .filter(|host| !host.is_empty())
            .collect(),
        None => Vec::new(),
    };
    if hosts.is_empty() {
        return vec![Check::fail(
            "redis",
            format!("{url}: no host"),
            "set --redis redis://HOST:PORT",
        )];
    }
    hosts.iter().map(|host| redis_node(host)).collect()
}

fn redis_node(host: &str) -> Check {
    let attempt = || -> Result<(String, Duration), String> {
        let addr = host
            .to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
        let mut writer = stream;
        let started = Instant::now();
        writer
            .write_all(b"*1\r\n$4\r\nPING\r\n")
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let rtt = started.elapsed();
        if !line.starts_with("+PONG") {
            return Err(format!("unexpected reply {:?}", line.trim()));
        }
        writer
            .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            .map_err(|e| e.to_string())?;
        let mut version = String::from("unknown");
        let mut header = String::new();
        reader.read_line(&mut header).map_err(|e| e.to_string())?;
        let length: usize = header.trim_start_matches('$').trim().parse().unwrap_or(0);
        let mut read = 0;
        while read < length {
            let mut info = String::new();
            let n = reader.read_line(&mut info).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            read += n;
            if let Some(v) = info.trim().strip_prefix("redis_version:") {
                version = v.to_owned();
            }
        }
        Ok((version, rtt))
    };
    match attempt() {
        Ok((version, rtt)) if rtt < Duration::from_millis(5) => Check::pass(
            "redis",
            format!(
                "{host}: Redis {version}, PING round trip {} µs",
                rtt.as_micros()
            ),
        ),
        Ok((version, rtt)) => Check::warn(
            "redis",
            format!(
                "{host}: Redis {version}, PING round trip {} ms",
                rtt.as_millis()
            ),
            "put Redis close to the nodes: every purchase batch waits one round trip",
        ),
        Err(error) => Check::fail(
            "redis",
            format!("{host}: unreachable: {error}"),
            "start Redis or fix --redis; nodes answer 503 while it is down",
        ),
    }
}

fn clock_source() -> Check {
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .map(|text| text.trim().to_owned())
            .unwrap_or_default();
    match source.as_str() {
        "tsc" | "kvm-clock" | "arch_sys_counter" => Check::pass(
            "clock source",
            format!("{source}: clock_gettime stays in the vDSO"),
        ),
        "" => Check::warn(
            "clock source",
            "unknown",
            "check /sys/devices/system/clocksource/clocksource0",
        ),
        other => Check::warn(
            "clock source",
            format!("{other}: every timestamp is a system call"),
            "use tsc (clocksource=tsc on the kernel command line) if the CPU's TSC is stable",
        ),
    }
}
