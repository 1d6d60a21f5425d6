# stuckless — common tasks. `make help` lists them.
SHELL := /bin/bash
CARGO ?= cargo
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
export DATABASE_URL

# Simulator knobs: `make sim SEED=42` replays one seed verbosely.
SEEDS ?= 200
SEED ?=
SIM_ARGS ?=

.PHONY: help test test-containers lint fmt sim sim-long bench chaos pg-start pg-status build mutants mutants-quick

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

build: ## Build everything (debug)
	$(CARGO) build --workspace --all-targets

test: ## Run every test (needs Postgres: see docs/testing.md)
	$(CARGO) test --workspace --no-fail-fast

test-containers: ## The Postgres suites through testcontainers (DATABASE_URL unset): sets up docker.io and a local image if missing
	./tests/containers/run.sh

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

sim: ## Randomized simulation batch (SEEDS=n), or replay one seed (SEED=n, also draws sim-out/seed-n.svg)
	$(CARGO) run --profile sim -p stuckless-sim --bin stuckless-sim -- $(if $(SEED),--seed $(SEED) --verbose --timeline sim-out/seed-$(SEED).svg,--seeds $(SEEDS)) $(SIM_ARGS)

sim-long: ## A long randomized batch (10,000 seeds)
	$(CARGO) run --profile sim -p stuckless-sim --bin stuckless-sim -- --seeds 10000 $(SIM_ARGS)

pg-start: ## Start the machine's Postgres if it is not running
	@pg_isready -h 127.0.0.1 -p 5432 -q || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@pg_isready -h 127.0.0.1 -p 5432

pg-status: ## Is Postgres reachable at DATABASE_URL?
	@psql "$(DATABASE_URL)" -Atc 'select version()'

# Real-process chaos and benchmarks (tests/harness). CHAOS_ARGS / BENCH_ARGS pass options, e.g.
# `make chaos CHAOS_ARGS="--seed 7 --duration-s 300 --jobs 10000 --restarts 6"`. The chaos run starts a
# throwaway Postgres cluster of its own (initdb as the postgres user) and restarts it (--restarts,
# default 2); `--existing-server <url>` runs on a server you give it instead, never restarted.
CHAOS_ARGS ?=
BENCH_ARGS ?=

chaos: ## Long chaos run on a throwaway Postgres cluster it restarts: real workers, fault proxies, seeded faults, checks (CHAOS_ARGS)
	$(CARGO) build --release -p stuckless-harness --bins -p stuckless-cli
	./target/release/stuckless-chaos $(CHAOS_ARGS)

bench: ## Throughput, pickup latency, idle queries and crash recovery against a fresh database (BENCH_ARGS)
	$(CARGO) build --release -p stuckless-harness --bins -p stuckless-cli
	./target/release/stuckless-bench $(BENCH_ARGS)

# Mutation testing with cargo-mutants (`cargo install cargo-mutants`), never part of `make test`: the
# full run is hours on a small machine. docs/mutants.md has how to run it, every run's figures and
# the survivors. SHARD=k/n runs one slice (n machines or n evenings share a run); MUTANTS_ARGS
# passes options (e.g. `--in-place` in a scratch worktree with a warm target/, `--in-diff my.diff`).
# Results go to mutants-out/<crate>/mutants.out/.
# Shards count from 0 (`SHARD=0/2` and `SHARD=1/2` make one run); unset, the whole run.
SHARD ?=
MUTANTS_ARGS ?=
MUTANTS := nice -n 10 $(CARGO) mutants $(if $(SHARD),--shard $(SHARD) --sharding round-robin) $(MUTANTS_ARGS)
# The Postgres suites that guard crates/pg (the rest of the tests package is chaos-style and slow).
# Not sql_mutants: it guards the SQL text (its own hand-made mutants, in `make test`), takes a minute,
# and every Rust mutant it could catch fails conformance first.
# cargo-mutants' baseline runs only the mutated package's own tests, which would reject these
# targets, so the pg runs run that baseline themselves and then skip cargo-mutants' (with an explicit
# timeout, which a skipped baseline cannot derive). `--cargo-arg` (not `--cargo-test-arg`) so each
# mutant builds only these test binaries, not all twelve of the tests package.
PG_SUITES := conformance differential pg_storage concurrency bad_input notify_probe waker
PG_BASELINE := $(CARGO) test -p stuckless-pg -p stuckless-tests --lib $(addprefix --test=,$(PG_SUITES))
PG_GUARDS := --baseline skip --timeout 600 --cargo-arg=--lib $(addprefix --cargo-arg=--test=,$(PG_SUITES))
# The code whose mutants matter most: MemStore's fencing, expiry and reap, PgStorage's fencing.
QUICK_RE := 'State::fenced|State::complete|job_claim|job_heartbeat|job_fail|job_release|job_reap_expired'

# The simulator is too slow to judge all ~690 core mutants (its full suites take minutes), so it judges
# the survivors: the second core pass re-tests only what the core and testkit suites missed (the names
# in the first pass's missed.txt, as one anchored regex, unsharded: each lane judges its own), against
# 24 standard seeds with every checker (sim/tests/seeds.rs). Not `--iterate`: that re-tests every
# mutant not caught, unviable ones included (~200 a lane).
SIM_GUARD := --baseline skip --timeout 300 --cargo-arg=--test=seeds \
	--cargo-test-arg=the_standard_scenario_passes_a_few_seeds
SURVIVORS_RE = "^($$(sed -e 's/[][\.*^$$()+?{}|]/\\&/g' mutants-out/core/mutants.out/missed.txt | paste -sd'|'))$$"

mutants: ## cargo-mutants on crates/core (core and testkit suites, then the sim's seeds on survivors) and crates/pg (Postgres suites); hours (SHARD=k/n)
	@mkdir -p mutants-out/core mutants-out/pg
	-$(MUTANTS) -p stuckless-core --test-package stuckless-core,stuckless-testkit \
		--minimum-test-timeout 60 -o mutants-out/core
	@mkdir -p mutants-out/core-sim
	-! grep -q . mutants-out/core/mutants.out/missed.txt || nice -n 10 $(CARGO) mutants $(MUTANTS_ARGS) \
		-p stuckless-core --test-package stuckless-sim $(SIM_GUARD) --re $(SURVIVORS_RE) -o mutants-out/core-sim
	$(PG_BASELINE)
	-$(MUTANTS) -p stuckless-pg --test-package stuckless-pg,stuckless-tests $(PG_GUARDS) \
		-o mutants-out/pg
	@# The survivors of the last pass of each crate; any left fails the target.
	@cat mutants-out/core-sim/mutants.out/missed.txt mutants-out/pg/mutants.out/missed.txt 2>/dev/null; true
	@! cat mutants-out/core-sim/mutants.out/missed.txt mutants-out/pg/mutants.out/missed.txt 2>/dev/null | grep -q .

mutants-quick: ## cargo-mutants on the fencing, expiry and reap code only (MemStore and PgStorage's fence.rs)
	@mkdir -p mutants-out/core-quick mutants-out/pg-quick
	$(MUTANTS) -p stuckless-core --test-package stuckless-core,stuckless-testkit \
		--minimum-test-timeout 40 --re $(QUICK_RE) -o mutants-out/core-quick
	$(PG_BASELINE)
	$(MUTANTS) -p stuckless-pg -f crates/pg/src/fence.rs --test-package stuckless-pg,stuckless-tests \
		$(PG_GUARDS) -o mutants-out/pg-quick
