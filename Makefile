# The whole test suite: `make test`. Needs Postgres on 127.0.0.1:5432 (user postgres, trust auth), Redis on
# 127.0.0.1:6379, Node 20, Python 3, Chromium at /usr/bin/chromium (Debian's `chromium` package) and nginx (Debian's
# `nginx` package: test-js runs deploy/nginx.conf in front of two nodes, docs/deployment.md).
# PALAVER_TEST_PG overrides the Postgres base URL.
.PHONY: test build lint test-rust test-js test-browser test-python

PYTHON_ENV := tests/python/.venv

build:
	cargo build --bins

test: build test-rust test-js test-browser test-python

test-rust:
	cargo test --workspace --all-targets

test-js:
	cd client-js && npm ci --no-audit --no-fund && PALAVER_BIN=../target/debug/palaver npm test

test-browser:
	cd client-js && npm run build:demo && PALAVER_BIN=../target/debug/palaver npm run test:browser

test-python:
	python3 -m venv $(PYTHON_ENV)
	$(PYTHON_ENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	PALAVER_BIN=$(CURDIR)/target/debug/palaver $(PYTHON_ENV)/bin/pytest tests/python

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
