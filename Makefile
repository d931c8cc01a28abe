# wsim: `make run` starts the server, `make test` runs every test (SQLite and MariaDB).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(HOME)/.cache/wsim-target
WSIM_TEST_MYSQL_URL ?= mysql://root@127.0.0.1:3306/test
LISTEN ?= 0.0.0.0:6060
DATA_DIR ?= ./data

.PHONY: deps node-deps browser-deps run test test-backends lint fmt build bench

# The MySQL client library (libmysqlclient) comes from Debian.
deps:
	@if ! dpkg -s default-libmysqlclient-dev >/dev/null 2>&1; then \
		echo "installing default-libmysqlclient-dev"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-libmysqlclient-dev pkg-config; \
	fi

# Node.js and the real Socket.IO clients (1.x, 2.x, 4.x, and 1.3's browser build) the Gru tests drive,
# and playwright-core for the browser test, from npm.
node-deps:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "installing nodejs and npm"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; \
	fi
	@if [ ! tests/node/node_modules/.package-lock.json -nt tests/node/package-lock.json ]; then \
		cd tests/node && npm ci --no-audit --no-fund --loglevel=error --ignore-scripts; \
	fi

# Debian's Chromium for the browser test (playwright-core drives it; no browser is downloaded).
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "installing chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

build: deps
	$(CARGO) build --release

run: build
	mkdir -p $(DATA_DIR)
	$(CARGO_TARGET_DIR)/release/wsim --listen $(LISTEN) --data-dir $(DATA_DIR)

test: deps node-deps browser-deps
	WSIM_TEST_MYSQL_URL=$(WSIM_TEST_MYSQL_URL) $(CARGO) test --features bench-tool --lib --bins --tests -- --test-threads=4

# Each backend alone (cargo features `sqlite`, `mysql`) builds, lints clean and passes its tests
# (CI runs this after `make test`, which covers the default build with both).
test-backends: deps node-deps browser-deps
	@for backend in sqlite mysql; do \
		echo "== $$backend only"; \
		$(CARGO) clippy --all-targets --no-default-features --features $$backend,bench-tool -- -D warnings || exit 1; \
		WSIM_TEST_MYSQL_URL=$(WSIM_TEST_MYSQL_URL) $(CARGO) test --no-default-features --features $$backend,bench-tool \
			--lib --bins --tests -- --test-threads=4 || exit 1; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --features bench-tool -- -D warnings

fmt:
	$(CARGO) fmt --all

# The standard benchmark suite (release build; server on CPU 0, generator on CPU 1; SQLite and MariaDB).
bench: deps
	bash bench/run.sh
