//! Regression fixtures: plans that once failed, replayed by `cargo test`
//! for ever (`fixtures/sim/*.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::SimBuilder;
use crate::plan::FaultPlan;
use crate::variants::Variant;

/// What replaying a fixture must show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// No violation.
    Pass,
    /// At least one violation (a broken variant's fixture).
    Violation,
}

/// One saved run: scenario, seed, variant, plan and the expected verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fixture {
    /// Why it is kept.
    pub why: String,
    /// `standard`, `small` or `seed_document`.
    pub scenario: String,
    /// The seed (workload, network, API).
    pub seed: u64,
    /// The variant.
    pub variant: Variant,
    /// The expected verdict.
    pub expect: Expect,
    /// The fault plan.
    pub plan: FaultPlan,
}

/// Why a fixture could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// Reading failed.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The JSON is not a fixture.
    #[error("parsing {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
    /// An unknown scenario name.
    #[error("unknown scenario {0:?}")]
    Scenario(String),
}

impl Fixture {
    /// The world this fixture replays.
    pub fn builder(&self) -> Result<SimBuilder, FixtureError> {
        let base = match self.scenario.as_str() {
            "standard" => SimBuilder::new(),
            "small" => SimBuilder::small(),
            "seed_document" => SimBuilder::seed_document(),
            other => return Err(FixtureError::Scenario(other.to_owned())),
        };
        Ok(base.seed(self.seed).variant(self.variant).plan(self.plan.clone()))
    }

    /// Reads one fixture file.
    pub fn load(path: &Path) -> Result<Fixture, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| FixtureError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Every `*.json` fixture in `dir`, by file name.
    pub fn load_dir(dir: &Path) -> Result<Vec<(PathBuf, Fixture)>, FixtureError> {
        let entries = std::fs::read_dir(dir).map_err(|source| FixtureError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|p| Fixture::load(&p).map(|f| (p, f)))
            .collect()
    }
}
