//! How many cases a model test runs: its own default, unless `PROPTEST_CASES` says otherwise.
//! (proptest reads that variable only for `Config::default()`, and each model test sets its own
//! default to fit a busy 2-core box.)

/// `PROPTEST_CASES` if set and valid, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
