# Tiếng loa an ninh — every command a newcomer needs. See README.md.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup setup-test run test lint bench clean

setup:
	@scripts/setup.sh

# The suite also drives Debian's Chromium and runs against a PostgreSQL it starts itself.
setup-test:
	@scripts/setup.sh --with-browser --with-postgres

run: setup
	$(PY) -m console run

lint: setup-test
	.venv/bin/ruff check .
	.venv/bin/mypy

test: setup-test lint
	$(PY) -m pytest

bench: setup
	$(PY) -m bench

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
