# gitsync developer commands. `make test` is the one command that runs the whole suite.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: deps test lint bench run fmt

# Everything the tests need on a fresh Debian machine: git (and, as the suite grows, the
# AWS-compatible test server). Safe to run again.
deps:
	@command -v git >/dev/null || { apt-get update -qq && apt-get install -y -qq git; }
	@git --version

test: deps
	$(CARGO) test --locked --lib --bins --tests

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt

# Benchmarks against the baselines named in the issues; see benches/README.md.
bench:
	$(CARGO) build --release --locked
	bash benches/run-all.sh

# Run gitsync on your own repositories: make run ROOT=~/src
ROOT ?= $(HOME)/src
run:
	$(CARGO) run --release --locked -- run --root $(ROOT)
