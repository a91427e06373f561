# Two commands for a newcomer: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp names what was installed from: a change to the dependencies or to the install
# steps below installs again.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: install run test fuzz lint bench migrate clean

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## run: install, generate dev secrets, migrate, seed synthetic demo data, serve on :8000
run: $(STAMP)
	$(BIN)/referral dev

## test: install and run the whole suite on SQLite, then on PostgreSQL if
## REFERRAL_TEST_DATABASE_URL is set (each run in a fresh database it creates and drops)
test: $(STAMP)
	env -u REFERRAL_TEST_DATABASE_URL $(BIN)/pytest -q
	@if [ -n "$$REFERRAL_TEST_DATABASE_URL" ]; then \
		echo "--- again on PostgreSQL"; \
		$(BIN)/pytest -q; \
	fi

## fuzz: a longer schemathesis campaign than the suite's, fresh examples each run, every
## role (EXAMPLES per operation; PostgreSQL with REFERRAL_TEST_DATABASE_URL set)
EXAMPLES ?= 200
fuzz: $(STAMP)
	REFERRAL_FUZZ_EXAMPLES=$(EXAMPLES) $(BIN)/pytest -q tests/test_fuzz.py --hypothesis-show-statistics

## lint: style, Dockerfile, security smells (bandit) and known-vulnerable dependencies
## (pip-audit). Accepted findings and their reasons: docs/security-findings.md
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check referral tests migrations/env.py bench
	$(BIN)/hadolint Dockerfile
	$(BIN)/bandit -q -c pyproject.toml -r referral migrations bench
	$(BIN)/pip-audit --strict --skip-editable --progress-spinner off --ignore-vuln CVE-2024-23342

migrate: $(STAMP)
	$(BIN)/referral db upgrade

## bench: seed (100k cases; ARGS="--cases 1000000"), serve, load at 32 clients, report in
## docs/benchmarks.md. PostgreSQL with REFERRAL_BENCH_DATABASE_URL=postgresql://...
## ARGS="--cases 1000000 --baseline 10000" also serves 10k beside it and compares latency.
bench: $(STAMP)
	mkdir -p var
	$(BIN)/python -m bench.run $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
