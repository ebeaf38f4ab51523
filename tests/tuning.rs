//! `tuning/apply-sysctl.sh --dry-run` reads every setting in `tuning/sysctl.d/90-seckill.conf`
//! and prints its current and intended value, changing nothing.

mod common;

use std::process::Command;

#[test]
fn the_sysctl_script_prints_old_and_new_values_for_every_key() {
    let root = env!("CARGO_MANIFEST_DIR");
    let conf = std::fs::read_to_string(format!("{root}/tuning/sysctl.d/90-seckill.conf"))
        .expect("the sysctl file");
    let keys: Vec<&str> = conf
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split('=').next().map(str::trim))
        .collect();
    assert!(keys.len() >= 10, "{keys:?}");
    // Its stdout and stderr are printed if an assertion below fails.
    let out = common::process::run(
        Command::new("bash")
            .arg(format!("{root}/tuning/apply-sysctl.sh"))
            .arg("--dry-run"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for key in keys {
        assert!(
            text.lines().any(
                |line| line.starts_with(&format!("{key}:")) && line.contains("->")
                    || line.contains(key) && line.contains("not in this kernel")
            ),
            "{key} missing from:\n{text}"
        );
    }
}
