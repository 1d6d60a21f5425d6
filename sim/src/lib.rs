//! Deterministic simulator for stuckless (in progress).
