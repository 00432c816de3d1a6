# `make demo` and `make test` are all a fresh machine needs: each creates the virtual
# environment, installs syncd with what it needs, then runs. A second run reinstalls
# only when pyproject.toml changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo lint bench chaos sandbox clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The tests run on every core (at most 4; PYTEST_WORKERS=0 runs them in this one process),
# a worker that runs out takes tests queued for a busy one (worksteal).
PYTEST_WORKERS ?= auto
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --maxprocesses 4 --dist worksteal $(PYTEST_ARGS)

# The HTML report's tests open it in a headless Chromium (Debian's package); installed here
# when missing and we may (root with apt-get, as in CI), else those tests are skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the HTML report tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "note: chromium is not installed; the HTML report's browser tests will be skipped"; \
	fi

demo: $(STAMP)
	$(BIN)/syncd demo

sandbox: $(STAMP)
	$(BIN)/syncd sandbox

# ruff, mypy (strict on syncd/core, see pyproject.toml) and the layering check
lint: $(STAMP)
	$(BIN)/ruff check syncd tests benchmarks
	$(BIN)/mypy
	$(BIN)/python tests/test_layers.py

bench: $(STAMP)
	$(BIN)/python benchmarks/simulated_day.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/calendar_requests.py
	$(BIN)/python benchmarks/rates_fit.py

# The crash-and-fault campaign against the real syncd process (benchmarks/chaos.py):
# CHAOS=short (under a minute; CI runs it on EWS, and on Graph with PostgreSQL) or CHAOS=long
# (300+ kills, 20+ fault schedules); e.g. make chaos CHAOS=long CHAOS_ARGS="--seed 7 --time-limit 5400";
# syncd on Microsoft Graph: CHAOS_ARGS="--backend graph"; its database in PostgreSQL:
# CHAOS_ARGS="--database postgresql+psycopg://USER@HOST/DB" (a schema of its own per run)
CHAOS ?= short
chaos: $(STAMP)
	$(BIN)/python benchmarks/chaos.py --mode $(CHAOS) $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
