# Tiếng loa an ninh — every command a newcomer needs. See README.md.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup setup-test run test lint bench soak screenshots clean

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

# Two processes (pytest-xdist), one test file each at a time: most tests wait on brokers,
# bridges and browsers, so two share two cores well. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: setup-test lint
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

bench: setup
	$(PY) -m bench

# The long, bounded reliability runs (docs/reliability.md): fuzzing at 2,000 cases per decoder,
# the long fault variants and 1,000 bridges. Figures land in .soak/ as JSON.
soak: setup-test
	@mkdir -p .soak
	LOA_SOAK=1 LOA_FUZZ_EXAMPLES=2000 LOA_FUZZ_REPORT=.soak/fuzz.json \
	LOA_FAULT_REPORT=.soak/faults.jsonl LOA_LOAD_REPORT=.soak/load.json \
	$(PY) -m pytest -p no:cacheprovider tests/fuzz tests/faults tests/load

# docs/screenshots/*.png from a throwaway demo commune (docs/console.md, "What it looks like").
screenshots:
	@scripts/setup.sh --with-browser
	$(PY) scripts/screenshots.py --out docs/screenshots

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .hypothesis .soak
