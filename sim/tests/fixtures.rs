//! Every plan that once failed, replayed for ever: the broken variant it
//! caught is still caught, and stuckless passes the same plan.

use std::path::Path;

use stuckless_sim::{Expect, Fixture, Variant};

#[test]
fn saved_plans_replay_with_their_verdicts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sim");
    let fixtures = Fixture::load_dir(&dir).expect("fixtures load");
    assert!(fixtures.len() >= 5, "fixtures missing from {}", dir.display());
    for (path, fixture) in fixtures {
        let outcome = fixture.builder().expect("known scenario").run();
        match fixture.expect {
            Expect::Pass => assert!(
                outcome.passed(),
                "{}: {}",
                path.display(),
                outcome.failure_report()
            ),
            Expect::Violation => {
                assert!(
                    !outcome.passed(),
                    "{}: the violation is no longer caught",
                    path.display()
                );
                let fixed = fixture
                    .builder()
                    .expect("known scenario")
                    .variant(Variant::Stuckless)
                    .run();
                assert!(
                    fixed.passed(),
                    "{} under stuckless: {}",
                    path.display(),
                    fixed.failure_report()
                );
            }
        }
    }
}
