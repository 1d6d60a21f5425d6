//! Postgres storage for stuckless (in progress).
