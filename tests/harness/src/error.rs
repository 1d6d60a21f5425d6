//! Typed errors of the harness library.

/// Why a harness operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A socket, file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A statement or connection to Postgres failed.
    #[error("{context}: {source}")]
    Db {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The Postgres layer refused (connect, migrate).
    #[error("{context}: {source}")]
    Pg {
        /// What was being done.
        context: String,
        /// The layer's error.
        #[source]
        source: Box<stuckless_pg::PgError>,
    },
    /// A storage call failed.
    #[error("{context}: {source}")]
    Storage {
        /// What was being done.
        context: String,
        /// The storage's error.
        #[source]
        source: stuckless_core::StorageError,
    },
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    Config(String),
    /// Something did not happen within its time bound.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Result of a harness operation.
pub type HarnessResult<T> = Result<T, HarnessError>;

/// Adds context to the errors the harness meets.
pub trait Context<T> {
    /// Wraps the error with `context`.
    fn context(self, context: impl Into<String>) -> HarnessResult<T>;
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn context(self, context: impl Into<String>) -> HarnessResult<T> {
        self.map_err(|source| HarnessError::Io {
            context: context.into(),
            source,
        })
    }
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: impl Into<String>) -> HarnessResult<T> {
        self.map_err(|source| HarnessError::Db {
            context: context.into(),
            source,
        })
    }
}

impl<T> Context<T> for Result<T, stuckless_pg::PgError> {
    fn context(self, context: impl Into<String>) -> HarnessResult<T> {
        self.map_err(|source| HarnessError::Pg {
            context: context.into(),
            source: Box::new(source),
        })
    }
}

impl<T> Context<T> for Result<T, stuckless_core::StorageError> {
    fn context(self, context: impl Into<String>) -> HarnessResult<T> {
        self.map_err(|source| HarnessError::Storage {
            context: context.into(),
            source,
        })
    }
}
