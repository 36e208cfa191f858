# Sluice: `make run` serves in memory on :8080; `make test` installs what the tests need and
# runs them.

CARGO ?= cargo
VENV := .venv
MOTO := $(VENV)/bin/moto_server
PORT ?= 8080

.PHONY: build run test test-deps lint fmt clean

build:
	$(CARGO) build --release --bin sluice

run: build
	./target/release/sluice --port $(PORT)

# A virtualenv with moto, the S3-compatible server the S3 restart test runs against.
$(MOTO):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'moto[server]'

test-deps: $(MOTO)

test: test-deps
	$(CARGO) test --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -rf $(VENV)
