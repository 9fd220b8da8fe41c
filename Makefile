# From a fresh clone, two commands (only Python 3.11+ and make assumed):
#   make run     the service on the embedded defaults (config/monitor.toml)
#   make test    lint, type check and the test suite (what .ci/run runs)
# Both set up .venv from requirements.lock on first use, again whenever the lock,
# pyproject.toml or the C speedups (setup.py, monitor/_speedups.c) change, and do nothing
# else on later uses. Without a C compiler the speedups are skipped: the same results.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=
PIP_TOOLS := pip-tools==7.6.2

.PHONY: run test lint lock container-test clean

run: $(INSTALLED)
	$(BIN)/monitor run

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(INSTALLED)
	$(BIN)/ruff check monitor tests bench docker
	$(BIN)/mypy

# The image and the compose stack for real (needs a Docker daemon; skips without one).
container-test: $(INSTALLED)
	$(BIN)/python -m pytest -v tests/test_container.py

# The lock pins everything the venv and the image install. The monitor package itself is
# installed editable and without dependencies, so the lock alone decides every version;
# `pip check` then catches a pyproject.toml whose dependencies the lock does not cover.
$(INSTALLED): requirements.lock pyproject.toml setup.py monitor/_speedups.c
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "monitor needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V)" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	@# Bytecode once, here: where PYTHONDONTWRITEBYTECODE is set (as on these machines) every
	@# command would otherwise compile its modules again at start (10 ms of an idle scan).
	$(BIN)/python -m compileall -q monitor
	@$(BIN)/python -m pip check >/dev/null || { $(BIN)/python -m pip check >&2; \
		echo "requirements.lock does not cover pyproject.toml: run 'make lock'" >&2; exit 1; }
	touch $@

# Re-resolve the lock after a change to pyproject.toml; existing pins are kept where they
# still fit. `make lock UPGRADE=1` moves every pin to the newest release.
lock:
	test -x .venv-lock/bin/pip-compile || { $(PYTHON) -m venv .venv-lock \
		&& .venv-lock/bin/python -m pip install -q $(PIP_TOOLS); }
	.venv-lock/bin/pip-compile -q $(if $(UPGRADE),--upgrade) --extra test --extra postgres \
		--all-build-deps --allow-unsafe --strip-extras --no-emit-find-links --no-emit-index-url \
		--output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .venv-lock build *.egg-info .mypy_cache .pytest_cache .ruff_cache
