# edgetam-provision: `make setup` (fresh clone -> verified install), `make test`, `make bench`.
#
# With uv on PATH, `make setup` uses it (`uv sync`: the locked versions in uv.lock). Otherwise it
# takes the newest python3.X on PATH that meets the floor (3.10), and stops with one line naming
# what to install when there is none (macOS's system Python is 3.9). `make setup UV=` forces pip.
VENV ?= .venv
PY := $(VENV)/bin/python
PROVISION := $(VENV)/bin/provision
BACKUPS ?= model_backups
# extras installed with the package: CI adds p2p (libtorrent) for push --p2p's tests
EXTRAS ?= dev
UV ?= $(shell command -v uv 2>/dev/null)
PYTHON ?= $(shell for p in python3.14 python3.13 python3.12 python3.11 python3.10 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
	>/dev/null 2>&1 && { command -v $$p; break; }; done)

comma := ,
space := $(subst ,, )

.PHONY: setup install test test-fast matrix lint bench clean

install: $(VENV)/.installed

# Bytecode compiled here, once, as pip does when it installs (without it, wherever bytecode is not
# written, e.g. PYTHONDONTWRITEBYTECODE, every start compiles what it imports): not [tool.uv]
# compile-bytecode, which compiles the whole environment again on each `uv run` (docs/performance.md).
$(VENV)/.installed: pyproject.toml
ifneq ($(strip $(UV)),)
	UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync $(foreach e,$(EXTRAS),--extra $(e)) --compile-bytecode
else
	@test -n "$(PYTHON)" || { echo "error: Python 3.10 or newer is needed and none is on PATH (python3 is \
	$$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo missing)); hint: \
	brew install python@3.12, or install uv and run make setup again (uv python install 3.12)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[$(subst $(space),$(comma),$(strip $(EXTRAS)))]'
endif
	touch $@

# Restore any backups, then prove the install works (verify decides: real weights or self-test).
setup: install
	@if ls $(BACKUPS)/*.tar* >/dev/null 2>&1; then $(PROVISION) restore $(BACKUPS); \
	else echo "no backups in $(BACKUPS)/: nothing to restore" >&2; fi
	$(PROVISION) verify --or-synthetic

# pytest exits 5 when it ran no test: that is a failure here.
# UV is passed on: in a uv venv (no pip) the tests build and install wheels with it.
# Two pytest-xdist workers: the whole suite (CI's profile, PROVISION_REQUIRE_ALL=1) passed twice on
# them here, in 519 s and 714 s on the shared 2-core machine (load 3-6); more workers were not tried.
test: install
	UV=$(UV) $(PY) -m pytest -q -n 2; rc=$$?; if [ $$rc -eq 5 ]; then echo "error: no tests ran" >&2; exit 1; fi; exit $$rc
	$(VENV)/bin/ruff check edgetam_provision tests benchmarks test_images
	$(VENV)/bin/mypy

# No sshd, no model build: the quick loop while working (Hypothesis's quick "dev" profile unless
# CI=true), on WORKERS pytest-xdist processes: twice the cores, at most 8 (half of the loop's time is
# waiting on subprocesses, servers and deadlines, so two per core overlap it; past 8 each worker's
# start, 5 s of collecting, buys nothing). WORKERS=0 runs it in one process. Measured side by side
# on a 2-core machine shared with other work (load 2-4): 4 workers 47-94 s (76-87 s CPU), 2 workers
# 62-77 s (64-70 s CPU), one process 93-103 s (54-58 s CPU): under a minute while the cores are free.
WORKERS ?= $(shell n=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); echo $$((n > 4 ? 8 : 2 * n)))
test-fast: install
	$(PY) -m pytest -q -m "not ssh and not slow" -n $(WORKERS); rc=$$?; if [ $$rc -eq 5 ]; then echo "error: no tests ran" >&2; exit 1; fi; exit $$rc

# The light commands on Python 3.10, 3.11.2 (Debian 12's), 3.12 and 3.13, each in its own venv.
matrix:
	.ci/matrix

# ruff, then mypy over edgetam_provision/ ([tool.mypy] in pyproject.toml: which modules are strict)
lint: install
	$(VENV)/bin/ruff check edgetam_provision tests benchmarks test_images
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .matrix build *.egg-info .pytest_cache .ruff_cache .mypy_cache
