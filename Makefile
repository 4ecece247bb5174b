# secrets-agent: `make demo` and `make test` work on a fresh machine with Python 3.11+ and pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint typecheck suite js-sdk browser bench bench-freshness bench-bad-days bench-fanout bench-fleet clean

# (Re)create the virtualenv and install the package with its dev/test extras
# whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/secrets-agent demo

# Style, and the package layering (pyproject.toml [tool.importlinter]): a lower layer never imports a higher one.
lint: $(STAMP)
	$(BIN)/ruff check agent tests bench
	$(BIN)/ruff format --check agent tests bench
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole suite: tests/unit and tests/integration (real moto_server, agent processes, sockets).
# (Formerly `unit`, renamed now that tests/unit holds only the unit tests.)
suite: $(STAMP) js-sdk browser
	$(BIN)/pytest

# Only tests/unit: pure logic, no processes or sockets, a few seconds. Not a substitute for `make test`.
test-fast: $(STAMP)
	$(BIN)/pytest tests/unit

# The AWS SDK for JavaScript, for one SDK-endpoint test; skipped (and the test with it) without npm.
js-sdk:
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --silent --no-audit --no-fund --prefix tests/js >/dev/null 2>&1 || echo "npm ci failed: the JavaScript SDK test will be skipped"; \
	else echo "npm not found: the JavaScript SDK test will be skipped"; fi

# A real headless browser for the /ui test: Debian's chromium and chromium-driver (Selenium is given
# their paths and never downloads a browser). Installed when chromedriver is missing, as bench/run.sh does wrk.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

test: lint typecheck suite

# Throughput needs wrk, nginx and a C compiler (Debian packages); bench/run.sh installs them when missing.
bench: $(STAMP)
	bench/run.sh

# Upstream calls and staleness by refresh policy (about 15 minutes).
bench-freshness: $(STAMP)
	$(BIN)/python -m bench.freshness

# SNS fan-out: agents on one topic, publish-to-served latency, what each filter let through (about a minute).
bench-fanout: $(STAMP)
	$(BIN)/python -m bench.fanout

# Hung and failing upstreams, SIGTERM during trouble, missing secrets (about a minute).
bench-bad-days: $(STAMP)
	$(BIN)/python -m bench.bad_days

# Fleets of 1 to 100,000 agents against the account-wide quotas, simulated (a few minutes, no AWS, no moto).
bench-fleet: $(STAMP)
	$(BIN)/python -m bench.fleet

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
