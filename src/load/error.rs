//! Why a load run could not start or finish.

/// A failed load run. [`LoadError::exit_code`] maps each kind to the CLI's exit status.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An option is out of range or malformed; `flag` names the command-line flag.
    #[error("{flag}: {message}")]
    Invalid {
        /// The flag at fault, e.g. `--rate`.
        flag: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A target's host could not be resolved.
    #[error("--url {url}: cannot resolve host: {source}")]
    Resolve {
        /// The URL as given.
        url: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// A target resolves to an address that is not loopback and `--allow-remote` was not given.
    #[error(
        "--url {url} resolves to {addr}, which is not a loopback address; \
         pass --allow-remote to send load to a remote deployment"
    )]
    Remote {
        /// The URL as given.
        url: String,
        /// The first non-loopback address it resolved to.
        addr: std::net::IpAddr,
    },
    /// A target answered that the sale does not exist: every purchase would be a 404.
    #[error(
        "--sku {sku}: no such sale at {url} (GET /v1/sales/{sku} answered 404); create it first"
    )]
    UnknownSale {
        /// The URL as given.
        url: String,
        /// The SKU asked for.
        sku: String,
    },
    /// The runtime failed: an executor could not start or stopped abnormally.
    #[error("load generator runtime: {0}")]
    Runtime(String),
}

impl LoadError {
    /// The process exit status for this error: 2 for a usage problem (bad or refused options),
    /// 1 for a failure while running.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Invalid { .. }
            | Self::Resolve { .. }
            | Self::Remote { .. }
            | Self::UnknownSale { .. } => 2,
            Self::Runtime(_) => 1,
        }
    }

    /// A usage error (exit status 2) about `flag`, explained by `message`.
    pub(crate) fn invalid(flag: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            flag,
            message: message.into(),
        }
    }
}
