# edgetam-provision: `make setup` (fresh clone -> verified install), `make test`, `make bench`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PROVISION := $(VENV)/bin/provision
BACKUPS ?= model_backups

.PHONY: setup install test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Restore any backups, then prove the install works (verify decides: real weights or self-test).
setup: install
	@if ls $(BACKUPS)/*.tar* >/dev/null 2>&1; then $(PROVISION) restore $(BACKUPS); \
	else echo "no backups in $(BACKUPS)/: nothing to restore" >&2; fi
	$(PROVISION) verify --or-synthetic

# pytest exits 5 when it ran no test: that is a failure here.
test: install
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "error: no tests ran" >&2; exit 1; fi; exit $$rc
	$(VENV)/bin/ruff check edgetam_provision tests benchmarks

lint: install
	$(VENV)/bin/ruff check edgetam_provision tests benchmarks

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
