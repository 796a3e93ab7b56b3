# Two commands (CONTRACT §1): `make run` and `make test`. Everything else serves them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app app
HOST ?= 127.0.0.1
PORT ?= 5000
DEMO_EVERY ?= 5
EMULATOR_PORT ?= 5055

.PHONY: run test install install-dev assets migrate demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[postgres]'
	touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

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

# The app, and beside it a loop that pays the demo paybill every few seconds.
run: install assets demo
	@echo "Callback URLs (Safaricom calls these):"
	@$(FLASK) payments shortcodes
	@echo "Marejesho at http://$(HOST):$(PORT)/ (Ctrl-C stops it)"
	@echo "Daraja emulator at http://$(HOST):$(EMULATOR_PORT)/"
	@$(FLASK) emulator serve --host $(HOST) --port $(EMULATOR_PORT) & emulator=$$!; \
	  $(FLASK) emulator demo-traffic --every $(DEMO_EVERY) & demo=$$!; \
	  trap 'kill $$demo $$emulator 2>/dev/null' EXIT INT TERM; \
	  MAREJESHO_DARAJA_SANDBOX_URL=$${MAREJESHO_DARAJA_SANDBOX_URL:-http://$(HOST):$(EMULATOR_PORT)} \
	  $(FLASK) run --host $(HOST) --port $(PORT)

test: install-dev assets
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .

bench: install-dev
	$(BIN)/python bench/import_loans.py

clean:
	rm -rf $(VENV) node_modules static/vendor .pytest_cache
