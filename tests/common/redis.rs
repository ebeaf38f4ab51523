//! Hermetic `redis-server` processes for tests: each on its own ephemeral port and temp
//! directory, stopped by PID, restartable on the same port and data (for AOF recovery tests).

use std::io::{BufRead, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server with `extra` arguments (for example `--appendonly yes`).
    pub fn start(extra: &[&str]) -> RedisServer {
        let dir = super::fresh_data_dir();
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = RedisServer {
            child: None,
            port: super::pick_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("redis log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("redis-server must be installed (apt-get install redis-server): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self
                .command(&["PING"])
                .is_some_and(|reply| reply.starts_with("+PONG"))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and directory (with AOF on, the data comes back).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Sends one command and returns the whole reply in RESP form, or `None` if Redis does not
    /// answer.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        (&stream).write_all(request.as_bytes()).ok()?;
        let mut reader = std::io::BufReader::new(stream);
        let mut reply = String::new();
        read_value(&mut reader, &mut reply).ok()?;
        Some(reply)
    }

    /// An integer reply (`:N`), or the integer in a bulk string.
    pub fn integer(&self, args: &[&str]) -> Option<i64> {
        let reply = self.command(args)?;
        let line = reply.lines().find(|line| !line.starts_with('$'))?;
        line.trim_start_matches(':').trim().parse().ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads one RESP value, appending its lines to `out`.
fn read_value(reader: &mut impl BufRead, out: &mut String) -> std::io::Result<()> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    out.push_str(&line);
    let count: i64 = line[1..].trim().parse().unwrap_or(-1);
    match line.as_bytes()[0] {
        b'$' if count >= 0 => {
            let mut body = vec![0u8; count as usize + 2];
            reader.read_exact(&mut body)?;
            out.push_str(&String::from_utf8_lossy(&body));
        }
        b'*' => {
            for _ in 0..count.max(0) {
                read_value(reader, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}
