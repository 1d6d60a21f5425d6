//! Cross-crate test support for stuckless (in progress).
