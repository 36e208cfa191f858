# Sluice: `make run` serves in memory on :8080; `make test` installs what the tests need and
# runs them.

CARGO ?= cargo
VENV := .venv
MOTO := $(VENV)/bin/moto_server
PORT ?= 8080

.PHONY: build run test test-deps seccomp-py lint fmt clean

build:
	$(CARGO) build --release --bin sluice

run: build
	./target/release/sluice --port $(PORT)

# A virtualenv with moto, the S3-compatible server the S3 tests run against, and the
# official Prometheus client, whose text parser checks /metrics.
VENV_READY := $(VENV)/.ready
$(VENV_READY): Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]' prometheus-client
	touch $@

# Headless Chromium for the dashboard test (Debian's package).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; } || { sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# libseccomp's Python bindings, to load the container seccomp profile in a test (Debian's).
seccomp-py:
	/usr/bin/python3 -c 'import seccomp' 2>/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y python3-seccomp; } || { sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y python3-seccomp; }

test-deps: $(VENV_READY) $(CHROMIUM) seccomp-py

define MSRV_OF_DEPENDENCIES
import json, sys
meta = json.load(sys.stdin)
version = lambda v: tuple(int(x) for x in v.split("."))
ours = {p["rust_version"] for p in meta["packages"] if p["source"] is None}
assert len(ours) == 1 and None not in ours, f"every package states the workspace's rust-version: {ours}"
ours = version(ours.pop())
newer = [f"{p['name']} {p['version']} needs {p['rust_version']}" for p in meta["packages"]
         if p["rust_version"] and version(p["rust_version"]) > ours]
sys.exit("dependencies newer than our rust-version:\n" + "\n".join(newer) if newer else 0)
endef
export MSRV_OF_DEPENDENCIES

test: test-deps
	$(CARGO) test --workspace --all-targets

# Clippy's incompatible_msrv checks our code against the workspace's rust-version; the
# dependencies' own rust-version must not be newer either.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) metadata --format-version 1 --locked | python3 -c "$$MSRV_OF_DEPENDENCIES"

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV)

# Load generator (bench/). `make bench` runs the standard matrix once, each scenario on a
# fresh release sluice on a free port. `make bench-compare` alternates sluice and `s2 lite`
# and prints the medians and the ratio sluice/s2-lite: the whole matrix in memory over three
# rounds, then the append entries on local disk, then the sustained entry on moto with the
# object writes each server makes. Neither runs in CI.
.PHONY: bench bench-compare bench-compare-memory bench-compare-disk bench-compare-moto bench-compare-wal bench-deps bench-s2

SLUICE_BENCH_CMD := ./target/release/sluice --host 127.0.0.1 --port {port}

# iperf3 measures loopback TCP, the yardstick of the large-batch append (Debian package).
bench-deps:
	command -v iperf3 >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3; } || { sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y iperf3; }
	$(CARGO) build --release --bin sluice
	$(CARGO) build --release -p sluice-bench

bench-s2:
	command -v s2 >/dev/null 2>&1 || $(CARGO) install --locked s2-cli

bench: bench-deps
	./target/release/sluice-bench compare --a "$(SLUICE_BENCH_CMD)" --rounds 1

bench-compare: bench-compare-memory bench-compare-disk bench-compare-moto bench-compare-wal

bench-compare-memory: bench-deps bench-s2
	./target/release/sluice-bench compare --a "$(SLUICE_BENCH_CMD)" --b "s2 lite --port {port}" --rounds 3

# Both servers on local disk, each scenario on a fresh --local-root.
bench-compare-disk: bench-deps bench-s2
	./target/release/sluice-bench compare --a "$(SLUICE_BENCH_CMD) --local-root {dir}" --b "s2 lite --port {port} --local-root {dir}" --rounds 3 --scenarios append-64k-100,append-100b-100,sustained-64k-100

# Both servers on a fresh moto bucket each; one round, since moto serves reads back slowly.
# Then the paced light loads with 10 ms added each way between server and store (as a real
# bucket answers), Sluice at 2 and 8 shards against `s2 lite`: ack latency and object
# writes/s; and Sluice's standard storage class.
STORE_LATENCY_MS ?= 10
bench-compare-moto: bench-deps bench-s2 $(VENV_READY)
	./target/release/sluice-bench compare --a "$(SLUICE_BENCH_CMD) --bucket {bucket}" --b "s2 lite --port {port} --bucket {bucket}" --rounds 1 --scenarios sustained-64k-100 --moto $(MOTO)
	./target/release/sluice-bench compare --a "$(SLUICE_BENCH_CMD) --bucket {bucket} --shards 2" --b "s2 lite --port {port} --bucket {bucket}" --rounds 1 --scenarios paced-1k-100,paced-1k-1000 --moto $(MOTO) --store-latency-ms $(STORE_LATENCY_MS)
	./target/release/sluice-bench compare --a "$(SLUICE_BENCH_CMD) --bucket {bucket} --shards 8" --rounds 1 --scenarios paced-1k-100,paced-1k-1000 --moto $(MOTO) --store-latency-ms $(STORE_LATENCY_MS)
	./target/release/sluice-bench compare --a "$(SLUICE_BENCH_CMD) --bucket {bucket} --shards 2" --rounds 1 --scenarios paced-1k-100,paced-1k-1000 --moto $(MOTO) --store-latency-ms $(STORE_LATENCY_MS) --storage-class standard

# Both servers with the write-ahead log on a fresh local directory each, the data on moto
# behind 20 ms each way: the light loads (ack latency, object writes/s to the bucket) and
# the sustained entry.
WAL_STORE_LATENCY_MS ?= 20
bench-compare-wal: bench-deps bench-s2 $(VENV_READY)
	./target/release/sluice-bench compare --a "$(SLUICE_BENCH_CMD) --bucket {bucket} --wal-local-root {dir} --shards 2" --b "s2 lite --port {port} --bucket {bucket} --wal-local-root {dir}" --rounds 1 --scenarios paced-1k-100,paced-1k-1000 --moto $(MOTO) --store-latency-ms $(WAL_STORE_LATENCY_MS)
	./target/release/sluice-bench compare --a "$(SLUICE_BENCH_CMD) --bucket {bucket} --wal-local-root {dir} --shards 2" --b "s2 lite --port {port} --bucket {bucket} --wal-local-root {dir}" --rounds 1 --scenarios sustained-64k-100 --moto $(MOTO) --store-latency-ms $(WAL_STORE_LATENCY_MS)

# Fuzzing (fuzz/, cargo-fuzz on the nightly toolchain). `make fuzz` runs every target for
# FUZZ_SECONDS under libFuzzer, with debug assertions, into a scratch corpus under target/
# that starts from the committed one; `make fuzz-merge` then adds to fuzz/corpus the inputs
# that reach new code. `make fuzz-seeds` rewrites the seeds. `make test` only replays the
# committed corpora (fuzz/tests/corpus.rs), on stable.
.PHONY: fuzz fuzz-deps fuzz-merge fuzz-seeds soak-faults
FUZZ_SECONDS ?= 60
FUZZ_TARGETS = $(shell sed -n 's/^name = "\([a-z0-9_]*\)"$$/\1/p' fuzz/Cargo.toml | grep -v sluice-fuzz)
FUZZ_SCRATCH := target/fuzz-corpus

fuzz-deps:
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz

fuzz: fuzz-deps
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_SCRATCH)/$$t && \
	  $(CARGO) +nightly fuzz run --features libfuzzer -a $$t $(FUZZ_SCRATCH)/$$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

fuzz-merge: fuzz-deps
	for t in $(FUZZ_TARGETS); do \
	  $(CARGO) +nightly fuzz run --features libfuzzer -a $$t fuzz/corpus/$$t $(FUZZ_SCRATCH)/$$t -- -merge=1 || exit 1; \
	done

fuzz-seeds:
	$(CARGO) run -p sluice-fuzz --example seeds

# The faulty-object-store test of `make test`, for FAULT_SOAK_SECS in cycles of faults
# (20 s), outage (30 s) and recovery (10 s), printing its figures.
FAULT_SOAK_SECS ?= 600
soak-faults: $(VENV_READY)
	FAULT_SOAK_SECS=$(FAULT_SOAK_SECS) $(CARGO) test --release --test e2e faulty_store -- --nocapture
