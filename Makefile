# pam-twofactor: the two commands a newcomer needs are `make demo` and
# `make test`; both install the Debian packages they need when missing.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

# What building and the demo need on Debian 12; the tests need more (real
# sshd, sudo, curl for the delivery examples, google-authenticator for
# imports, nss_wrapper for aliases, systemd for systemd-socket-activate:
# the delivery service as the packaged socket unit starts it; nothing is
# started at install; zbarimg to decode the enrollment QR code drawn as a
# terminal shows it; PostgreSQL 15 with pgcrypto for the fleet tests, each
# of which starts a throwaway cluster of its own; libssl-dev because the
# twofactor binary talks TLS to the fleet's database; iproute2's `ip netns`
# for the fleet's hosts with their own addresses).
DEPS := libpam0g-dev pamtester libpam-wrapper oathtool faketime libssl-dev pkg-config
TEST_DEPS := $(DEPS) openssh-server openssh-client sudo curl \
        libpam-google-authenticator libnss-wrapper systemd zbar-tools \
        postgresql-15 iproute2

.PHONY: all build release deps test lint demo deb deb-test bench bench-smoke \
        fuzz fuzz-smoke clean

all: build

deps:
	@scripts/ensure-packages $(DEPS)

build: deps
	$(CARGO) build --lib --bins

release: deps
	$(CARGO) build --release --lib --bins

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Everything: format, lints, unit tests, the real .so through real libpam
# (pam_wrapper + pamtester + libfaketime, codes from oathtool), real sshd,
# sudo and su (as root), host-process hygiene, then the Debian package
# installed in a namespace, a short fixed-seed fuzz run of every target and
# a smoke run of the benchmark. The package test and the benchmark need
# root; as another user they say loudly that they are skipped.
test: deps lint build
	@scripts/ensure-packages $(TEST_DEPS)
	$(CARGO) test --all-targets -- --test-threads=2
	@$(call as_root,deb-test,tests/deb-test.sh)
	fuzz/run.sh --smoke
	@$(call as_root,bench-smoke,bench/run.sh --smoke)

# $(call as_root,NAME,COMMAND): runs COMMAND as root, else prints why not.
as_root = if [ "$$(id -u)" -eq 0 ]; then $(2); \
          else echo "*** SKIPPED $(1): needs root (mount namespaces, dpkg, /var/lib) ***"; fi

# The Debian package: target/deb/libpam-twofactor_*.deb, checked by lintian.
deb:
	scripts/make-deb.sh

# Installs the package in a throwaway root (overlay in a mount namespace),
# enables it with pam-auth-update, logs in through common-auth, purges.
deb-test:
	tests/deb-test.sh

# Side by side with libpam-google-authenticator and libpam-oath; writes
# bench/results.md (a few minutes). bench-smoke only checks the harness.
bench:
	bench/run.sh

bench-smoke:
	bench/run.sh --smoke

# Every fuzz target for FUZZ_SECONDS each (default 600); fuzz-smoke is the
# short fixed-seed run that `make test` does.
FUZZ_SECONDS ?= 600
fuzz:
	fuzz/run.sh --long $(FUZZ_SECONDS)

fuzz-smoke:
	fuzz/run.sh --smoke

demo: build
	@scripts/demo.sh

clean:
	$(CARGO) clean
