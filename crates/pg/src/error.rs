//! Typed errors of the Postgres layer, and how database errors map onto the
//! core's [`StorageError`].

use stuckless_core::{StorageError, ValidationError};

/// Why a Postgres operation outside the [`Storage`](stuckless_core::driver::Storage)
/// trait (connecting, migrating, transactional enqueue) failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL could not be parsed as a Postgres connection string.
    #[error("invalid database URL: {reason}. Expected postgres://USER[:PASSWORD]@HOST:PORT/DATABASE")]
    BadUrl {
        /// What was wrong with it.
        reason: String,
    },
    /// No connection could be opened.
    #[error(
        "cannot reach Postgres at {host}:{port} (database {database:?}): {source}. \
         Is the server running and accepting TCP connections there? Start it (e.g. `make pg-start`) \
         or point DATABASE_URL at a reachable server, e.g. postgres://postgres@127.0.0.1:5432/postgres"
    )]
    Unreachable {
        /// Host from the URL.
        host: String,
        /// Port from the URL.
        port: u16,
        /// Database from the URL.
        database: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying `migrations/` failed.
    #[error("applying the stuckless migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The input was refused before anything was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The storage refused or could not do the operation.
    #[error(transparent)]
    Storage(StorageError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<StorageError> for PgError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Invalid(v) => PgError::Invalid(v),
            other => PgError::Storage(other),
        }
    }
}

/// Maps a driver error onto the core's error kinds.
///
/// Lost connections, pool exhaustion, server shutdown and serialization or
/// deadlock aborts are `Unavailable`: the operation may or may not have taken
/// effect and is safe to retry because every storage write is fenced or
/// idempotent. Constraint and data errors are bugs or bad input: `Other`.
pub(crate) fn storage_error(e: sqlx::Error) -> StorageError {
    let transient = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P0x: admin/crash shutdown, cannot
            // connect now; 40001/40P01: serialization failure / deadlock.
            code.starts_with("08") || code.starts_with("57P") || code == "40001" || code == "40P01"
        }),
        _ => false,
    };
    if transient {
        StorageError::Unavailable(e.to_string())
    } else {
        StorageError::Other(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::error::Error as StdError;

    use sqlx::error::{DatabaseError, ErrorKind};

    use super::*;

    /// A server error with only a SQLSTATE, as Postgres sends one.
    #[derive(Debug, thiserror::Error)]
    #[error("server said {0}")]
    struct ServerError(&'static str);

    impl DatabaseError for ServerError {
        fn message(&self) -> &str {
            "server error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            ErrorKind::Other
        }
    }

    fn from_server(code: &'static str) -> StorageError {
        storage_error(sqlx::Error::Database(Box::new(ServerError(code))))
    }

    /// Guards a cargo-mutants survivor (the `Database` arm of the transient
    /// check deleted): a serialization failure, a deadlock, a lost
    /// connection or a server shutting down must be retried, while a
    /// constraint or data error is a bug and is not.
    #[test]
    fn server_errors_are_transient_by_their_sqlstate() {
        for code in ["40001", "40P01", "08006", "57P01", "57P03"] {
            assert!(from_server(code).is_transient(), "{code} should be retried");
        }
        for code in ["23505", "22023", "42P01", "57014"] {
            assert!(!from_server(code).is_transient(), "{code} is not transient");
        }
        assert!(storage_error(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!storage_error(sqlx::Error::RowNotFound).is_transient());
    }
}
