# pam-twofactor: the two commands a newcomer needs are `make demo` and
# `make test`; both install the Debian packages they need when missing.

SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

# What building and testing need on Debian 12.
DEPS := libpam0g-dev pamtester libpam-wrapper oathtool faketime \
        openssh-server openssh-client sudo

.PHONY: all build release deps test lint unit integration demo clean

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

# Everything: format, lints, unit tests, and the real .so through real
# libpam (pam_wrapper + pamtester + libfaketime, codes from oathtool).
test: deps lint build
	$(CARGO) test --all-targets -- --test-threads=2

demo: build
	@scripts/demo.sh

clean:
	$(CARGO) clean
