# Finds a working Python >= 3.12 by running each candidate (pyenv shims may exist but fail).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SDK := sdk/miniprogram

define find_python
for c in python3.13 python3.12 python3 $$(ls -d $$(pyenv root 2>/dev/null)/versions/3.1[2-9]*/bin/python 2>/dev/null); do \
  if "$$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then echo "$$c"; exit 0; fi; \
done; echo "no Python >= 3.12 found" >&2; exit 1
endef

.PHONY: demo test test-fast lint format bench clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) && $(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' \
	  || { rm -rf $(VENV); PYBIN=$$($(find_python)) && echo "using $$PYBIN" && "$$PYBIN" -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# The mini-program SDK's dev dependencies (its tests' jsdom, miniprogram-simulate, typescript),
# from its lockfile. The SDK itself has no runtime dependencies.
$(SDK)/node_modules/.installed: $(SDK)/package.json $(SDK)/package-lock.json
	cd $(SDK) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: $(VENV)/.installed
	$(PY) app.py init-db
	$(PY) app.py seed-demo
	$(PY) app.py demo-session
	$(PY) app.py run-campaigns --dry-run
	$(PY) app.py run-campaigns
	$(PY) app.py compare --policy coupon_blast --policy tiered --policy golden_window --users 4500 --days 60 --seed 1 --html instance/compare.html

test: $(VENV)/.installed $(SDK)/node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	cd $(SDK) && npm test
	$(PY) -m pytest -q

# The same checks without the tests marked slow (10 s or more each): for the edit-test loop.
# `make test` stays the whole suite.
test-fast: $(VENV)/.installed $(SDK)/node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	cd $(SDK) && npm test
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/ingest.py
	$(PY) bench/scoring.py
	$(PY) bench/decide.py
	$(PY) bench/report.py
	$(PY) bench/simulate.py

clean:
	rm -rf $(VENV) instance .pytest_cache $(SDK)/node_modules
