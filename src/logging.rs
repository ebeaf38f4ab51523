//! Structured logs through `tracing`, to stderr, pretty or JSON.
//!
//! - Colour only on a terminal: a log file or journald would otherwise keep the escape codes.
//! - Records of crates that use `log` (glommio) are bridged to the same subscriber. One of them
//!   is reworded: glommio probes each block device for polled I/O by reading from the first DMA
//!   file opened on it, and seckill's first such file is a journal segment opened write-only,
//!   so the probe read fails with EBADF and glommio logs an ERROR per shard at every start.
//!   Nothing is wrong (glommio only leaves the poll ring off for that device, and the journal's
//!   appends never used it), so the record is logged at debug level with that explanation,
//!   rather than teaching operators to ignore ERROR lines.

use std::io::IsTerminal;

use tracing_log::AsLog;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Later calls are ignored (tests may start several servers).
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let max_level = filter
        .max_level_hint()
        .unwrap_or(tracing::level_filters::LevelFilter::TRACE);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match format {
        LogFormat::Pretty => tracing::subscriber::set_global_default(builder.finish()),
        LogFormat::Json => tracing::subscriber::set_global_default(builder.json().finish()),
    };
    if installed.is_ok() && log::set_boxed_logger(Box::new(Bridge::default())).is_ok() {
        log::set_max_level(max_level.as_log());
    }
}

/// `log` records into tracing, glommio's iopoll probe failure reworded (see the module docs).
#[derive(Default)]
struct Bridge(tracing_log::LogTracer);

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error && record.target() == "glommio::reactor" {
            let text = record.args().to_string();
            if text.contains("probing iopoll support") {
                tracing::debug!(
                    target: "glommio::reactor",
                    glommio = %text,
                    "polled I/O is off for this device: glommio probes it by reading from the \
                     first DMA file opened there, a journal segment opened write-only (harmless)"
                );
                return;
            }
        }
        self.0.log(record);
    }

    fn flush(&self) {
        self.0.flush();
    }
}
