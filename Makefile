# Two commands (CONTRACT §1): `make run` and `make test`. Everything else serves them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app app
HOST ?= 127.0.0.1
PORT ?= 5000
DEMO_EVERY ?= 5
EMULATOR_PORT ?= 5055
# Python packages are pinned, with hashes, by requirements.lock (the app and PostgreSQL's
# driver) and requirements-dev.lock (that, plus the test tools); `make lock` refreshes both
# from pyproject.toml with uv.
UV_VERSION := 0.13.9
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command "make lock"

.PHONY: run run-prod stop-prod test install install-dev assets migrate demo lint bench clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python requirements.lock
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# The dev lock holds every pin of the app's lock, so it installs the app too.
$(VENV)/.installed-dev: $(BIN)/python requirements.lock requirements-dev.lock
	$(BIN)/pip install --quiet -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# The newest versions pyproject.toml allows; the dev lock keeps the app's pins.
lock: $(BIN)/python
	$(BIN)/pip install --quiet 'uv==$(UV_VERSION)'
	$(BIN)/uv pip compile pyproject.toml --extra postgres --upgrade $(LOCK_FLAGS) \
	  -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra postgres \
	  --constraint requirements.lock --upgrade $(LOCK_FLAGS) -o requirements-dev.lock

# Front-end libraries come from the npm registry, pinned by package-lock.json.
static/vendor/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	mkdir -p static/vendor
	cp node_modules/htmx.org/dist/htmx.min.js static/vendor/htmx.min.js
	cp node_modules/@picocss/pico/css/pico.min.css static/vendor/pico.min.css
	cp node_modules/chart.js/dist/chart.umd.min.js static/vendor/chart.umd.min.js
	touch $@

assets: static/vendor/.stamp

migrate: install
	$(FLASK) db upgrade

demo: migrate
	$(FLASK) lenders load-demo
	$(FLASK) payments load-demo

# The app, and beside it a loop that pays the demo paybill every few seconds through the
# emulator started here (which confirms each payment to the app with the paybill's running
# balance, and keeps the statement at /_emulator/). The callback URLs it prints and the
# demo traffic follow HOST and PORT unless PUBLIC_BASE_URL is set.
run: export PUBLIC_BASE_URL ?= http://$(HOST):$(PORT)
run: install assets demo
	@echo "Callback URLs (Safaricom calls these):"
	@$(FLASK) payments shortcodes
	@echo "Marejesho at http://$(HOST):$(PORT)/ (Ctrl-C stops it)"
	@echo "Daraja emulator at http://$(HOST):$(EMULATOR_PORT)/"
	@$(FLASK) emulator serve --host $(HOST) --port $(EMULATOR_PORT) & emulator=$$!; \
	  $(FLASK) emulator demo-traffic --every $(DEMO_EVERY) \
	    --emulator http://$(HOST):$(EMULATOR_PORT) & demo=$$!; \
	  trap 'kill $$demo $$emulator 2>/dev/null' EXIT INT TERM; \
	  MAREJESHO_DARAJA_SANDBOX_URL=$${MAREJESHO_DARAJA_SANDBOX_URL:-http://$(HOST):$(EMULATOR_PORT)} \
	  $(FLASK) run --host $(HOST) --port $(PORT)

# The production shape on this machine, from the same Procfile an operator runs: PostgreSQL
# and Redis (local ones in instance/prod/ unless DATABASE_URL / REDIS_URL are set), gunicorn
# and two job workers under honcho, the emulator and demo traffic beside them.
PROD_DIR := instance/prod
PROD_PORT ?= 8000
PROD_PG_PORT ?= 5433
PROD_REDIS_PORT ?= 6380
PG_BIN ?= $(lastword $(wildcard /usr/lib/postgresql/*/bin))
AS_POSTGRES := $(if $(filter 0,$(shell id -u)),runuser -u postgres --,)
PROD_DATABASE_URL := $(or $(DATABASE_URL),postgresql://marejesho@127.0.0.1:$(PROD_PG_PORT)/marejesho)
PROD_REDIS_URL := $(or $(REDIS_URL),redis://127.0.0.1:$(PROD_REDIS_PORT)/0)
PROD_ENV := DATABASE_URL=$(PROD_DATABASE_URL) REDIS_URL=$(PROD_REDIS_URL) \
	PUBLIC_BASE_URL=$${PUBLIC_BASE_URL:-http://$(HOST):$(PROD_PORT)} \
	MAREJESHO_DARAJA_SANDBOX_URL=$${MAREJESHO_DARAJA_SANDBOX_URL:-http://$(HOST):$(EMULATOR_PORT)}

run-prod: install assets
	@mkdir -p $(PROD_DIR)
	@if [ -z "$(DATABASE_URL)" ]; then \
	  if [ ! -f $(PROD_DIR)/pg/PG_VERSION ]; then \
	    mkdir -p $(PROD_DIR)/pg && chmod 700 $(PROD_DIR)/pg; \
	    [ -z "$(AS_POSTGRES)" ] || chown postgres $(PROD_DIR)/pg; \
	    $(AS_POSTGRES) $(PG_BIN)/initdb --no-instructions -D $(PROD_DIR)/pg -U marejesho --auth=trust >/dev/null; fi; \
	  $(AS_POSTGRES) $(PG_BIN)/pg_ctl -D $(PROD_DIR)/pg status >/dev/null || \
	    $(AS_POSTGRES) $(PG_BIN)/pg_ctl -D $(PROD_DIR)/pg -w -l $(PROD_DIR)/pg/server.log \
	      -o "-p $(PROD_PG_PORT) -k /tmp -c listen_addresses=127.0.0.1" start; \
	  $(PG_BIN)/psql -h 127.0.0.1 -p $(PROD_PG_PORT) -U marejesho -d postgres -tAc \
	    "SELECT 1 FROM pg_database WHERE datname = 'marejesho'" | grep -q 1 || \
	    $(PG_BIN)/createdb -h 127.0.0.1 -p $(PROD_PG_PORT) -U marejesho marejesho; fi
	@if [ -z "$(REDIS_URL)" ]; then redis-cli -p $(PROD_REDIS_PORT) ping >/dev/null 2>&1 || \
	  redis-server --port $(PROD_REDIS_PORT) --bind 127.0.0.1 --daemonize yes \
	    --dir $(abspath $(PROD_DIR)) --logfile redis.log; fi
	$(PROD_ENV) $(FLASK) db upgrade
	$(PROD_ENV) $(FLASK) lenders load-demo
	$(PROD_ENV) $(FLASK) payments load-demo
	@$(PROD_ENV) $(FLASK) payments shortcodes
	@echo "Marejesho (production shape) at http://$(HOST):$(PROD_PORT)/ (Ctrl-C stops it)"
	@$(PROD_ENV) $(FLASK) emulator serve --host $(HOST) --port $(EMULATOR_PORT) & emulator=$$!; \
	  $(PROD_ENV) $(FLASK) emulator demo-traffic --every $(DEMO_EVERY) \
	    --emulator http://$(HOST):$(EMULATOR_PORT) & demo=$$!; \
	  trap 'kill $$demo $$emulator 2>/dev/null' EXIT INT TERM; \
	  $(PROD_ENV) BIND=$(HOST):$(PROD_PORT) $(BIN)/honcho start -f Procfile

# Stops the local PostgreSQL and Redis that run-prod started (their data stays).
stop-prod:
	-[ ! -f $(PROD_DIR)/pg/PG_VERSION ] || $(AS_POSTGRES) $(PG_BIN)/pg_ctl -D $(PROD_DIR)/pg -m fast stop
	-redis-cli -p $(PROD_REDIS_PORT) shutdown nosave 2>/dev/null

# Tests run in parallel (pytest-xdist): a process per core and one more, as many tests wait
# on a subprocess, a browser or a timer; at most 4 (each has its own PostgreSQL and Redis
# database). Idle processes take tests from busy ones. PYTEST_ARGS="-n 0" runs them here.
TEST_PROCESSES ?= $(shell $(PYTHON) -c 'import os; print(min(4, (os.cpu_count() or 1) + 1))')
PYTEST_ARGS ?= -n $(TEST_PROCESSES) --dist worksteal
test: install-dev assets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .

bench: install-dev
	$(BIN)/python bench/import_loans.py

clean:
	rm -rf $(VENV) node_modules static/vendor .pytest_cache
