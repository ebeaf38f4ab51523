//! How the model tests run proptest: each with its own default number of cases (sized for a busy
//! 2-core box), which `PROPTEST_CASES` overrides, and failures kept beside the test file
//! (`tests/<name>.regressions`) so they are replayed first.
//! (proptest reads `PROPTEST_CASES` only for `Config::default()`, which a model test does not use.)

use proptest::test_runner::{Config, FileFailurePersistence};

/// `PROPTEST_CASES` if set and valid, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The config of a model test that runs `default_cases` unless told otherwise.
pub fn config(default_cases: u32) -> Config {
    Config {
        cases: cases(default_cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}
