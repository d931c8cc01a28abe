# wsim: `make run` starts the server, `make test` runs every test (SQLite and MariaDB).
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TARGET_DIR ?= $(HOME)/.cache/wsim-target
WSIM_TEST_MYSQL_URL ?= mysql://root@127.0.0.1:3306/test
LISTEN ?= 0.0.0.0:6060
DATA_DIR ?= ./data

.PHONY: deps node-deps browser-deps run test test-backends lint fmt build bench fuzz

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
# Chromium for the browser tests, with fonts for Chinese text and emoji (the console's screenshots).
browser-deps:
	@if ! command -v chromium >/dev/null 2>&1 || ! dpkg -s fonts-wqy-microhei fonts-noto-color-emoji >/dev/null 2>&1; then \
		echo "installing chromium and fonts"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei fonts-noto-color-emoji; \
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

# Every parser that reads client bytes under libFuzzer with AddressSanitizer, FUZZ_SECS seconds each,
# starting from (and adding to) the committed corpora in fuzz/corpus, plus fuzz/regressions (inputs that
# once crashed; kept out of the corpus so that `cargo fuzz cmin` never drops them). cargo-fuzz wants nightly flags:
# RUSTC_BOOTSTRAP lets the machine's stable compiler take them. Not part of `make test`.
FUZZ_SECS ?= 60
FUZZ_TARGETS := wsim_codec engineio socketio_events gateway_ids_tokens longweb_params media
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
		echo "== $$t ($(FUZZ_SECS) s)"; \
		mkdir -p regressions/$$t; \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run -O --target-dir $(HOME)/.cache/wsim-fuzz-target $$t corpus/$$t regressions/$$t -- \
			-max_total_time=$(FUZZ_SECS) -max_len=8192 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
			2>&1 | grep -E "^stat::number_of_executed_units|^stat::peak_rss|Done [0-9]+ runs|ERROR|SUMMARY|panicked" \
			|| exit 1; \
		test -z "$$(ls artifacts/$$t 2>/dev/null)" || { echo "$$t: crash inputs in fuzz/artifacts/$$t"; exit 1; }; \
	done
