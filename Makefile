# Every target installs what it needs into .venv first (idempotent, keyed on pyproject + constraints).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test up bench chaos clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing marlops and its pinned dependencies into $(VENV) (first run takes a few minutes)"
	$(BIN)/pip install --quiet --progress-bar off -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/marlops demo

# Two workers, whole modules each (module fixtures start real servers once): most tests wait on servers, so two
# workers on two cores halve the wall time. TEST_WORKERS=0 runs everything in this one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	@bash scripts/install_chromium.sh
	@bash scripts/install_monitoring.sh
	$(BIN)/python -m pytest -q -rs --durations=25 -n $(TEST_WORKERS) --dist loadfile

up: $(STAMP)
	$(BIN)/marlops up

bench: $(STAMP)
	$(BIN)/marlops bench

# kill -9 the gateway >= 20 times during a replay of >= 2000 orders, on SQLite and on PostgreSQL
chaos: $(STAMP)
	$(BIN)/marlops chaos

clean:
	rm -rf .marlops models
	find serving/triton_models -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
