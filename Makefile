# Tiếng loa an ninh — every command a newcomer needs. See README.md.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup run test lint bench clean

setup:
	@scripts/setup.sh

run: setup
	$(PY) -m console run

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

test: setup lint
	$(PY) -m pytest

bench: setup
	$(PY) -m bench

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis
