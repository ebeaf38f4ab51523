//! The README's newcomer path, as a newcomer pastes it: the shell blocks of "Authentication",
//! "Sales" and the first of "Purchase", run in order by `bash` against the real binary. Only
//! what a test must change is changed: the binary's path (this build's), the port and data dir
//! (free ones), a wait for readiness after the server is started, and a wait for the sale to open
//! before buying (the README says to buy after it opens). The server is stopped by PID.

mod common;

use std::process::Command;

use common::process::run;
use common::*;

/// The ```sh blocks of the README section titled `heading`, in order.
fn shell_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading}"));
    let section = &readme[start + heading.len() + 2..];
    // Up to the next heading (a `#` comment inside a block is not one).
    let end = ["\n## ", "\n### "]
        .iter()
        .filter_map(|next| section.find(next))
        .min()
        .unwrap_or(section.len());
    let section = &section[..end];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body
            .find("```")
            .unwrap_or_else(|| panic!("unclosed block in {heading}"));
        blocks.push(body[..close].to_owned());
        rest = &body[close..];
    }
    blocks
}

#[test]
fn the_readme_newcomer_path_runs_as_pasted() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let mut script = String::from("set -e\ncd \"$SCRATCH\"\n");
    for heading in ["### Authentication", "### Sales"] {
        for block in shell_blocks(&readme, heading) {
            script.push_str(&block);
        }
    }
    let buy = shell_blocks(&readme, "### Purchase")
        .into_iter()
        .next()
        .expect("a purchase example");
    script.push_str("echo; echo '== waiting for the sale to open'\nsleep 31\n");
    script.push_str(&buy);

    let port = pick_port();
    let scratch = ScratchDir::new();
    let log = scratch.join("server.log");
    let url = format!("http://127.0.0.1:{port}");
    // Rewritten for the test: this build's binary, a free port, and a wait for readiness.
    let serve_line = "target/release/seckill serve &";
    assert!(
        script.contains(serve_line),
        "the README starts the server with `{serve_line}`"
    );
    let script = script
        .replace("cargo build --release\n", "\n")
        .replace(
            serve_line,
            &format!(
                "target/release/seckill serve --listen 127.0.0.1:{port} --shards 1 >{} 2>&1 &\n\
                 SERVER=$!; trap 'kill $SERVER' EXIT\n\
                 for _ in $(seq 600); do curl -sf {url}/readyz >/dev/null && break; sleep 0.1; done\n",
                log.display()
            ),
        )
        .replace("target/release/seckill", BIN)
        .replace("http://127.0.0.1:8080", &url);
    let ran = run(Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("SCRATCH", scratch.path())
        .env_remove("SECKILL_ADMIN_TOKEN")
        .env_remove("SECKILL_TOKEN_SECRET")
        .env_remove("SECKILL_DATA_DIR"));
    let out = String::from_utf8_lossy(&ran.stdout).into_owned();
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    let context = format!(
        "script:\n{script}\nstdout:\n{out}\nstderr:\n{}\nserver:\n{server_log}",
        ran.stderr()
    );
    assert!(ran.status.success(), "{context}");
    assert!(
        out.contains(r#""state":"upcoming""#),
        "the sale was not created upcoming: {context}"
    );
    assert!(
        out.contains(r#""order_id""#) && out.contains(r#""status":"pending""#),
        "the purchase made no order: {context}"
    );
}
