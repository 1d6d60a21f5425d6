//! # stuckless-harness
//!
//! Real processes, real Postgres. The chaos run ([`chaos`]) starts
//! `stuckless` worker processes, each talking to Postgres through its own
//! [`proxy::FaultProxy`], injects a seeded schedule of faults (SIGKILL,
//! SIGSTOP zombies, SIGTERM, black holes, latency, cut connections,
//! `pg_terminate_backend`, and at planned times Postgres restarts of its own
//! throwaway [`cluster`] and mass terminations, checked by [`outage`]), and then
//! [`checks`] what the database and the side table of executions say:
//! every job terminal, none lost, no stale completion accepted, every
//! execution a real attempt, no job stuck longer than lease + reap interval.
//! The bench ([`bench`]) measures throughput, pickup latency, idle queries
//! and crash recovery.

pub mod bench;
pub mod chaos;
pub mod chaos_config;
pub mod checks;
pub mod cluster;
pub mod db;
pub mod history;
pub mod outage;
pub mod process;
pub mod proxy;
pub mod recorder;
pub mod recording;
pub mod timed;
pub mod worker_log;
