# The two commands of the README: `make demo` (main job on digits) and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.n2c-installed

.PHONY: demo test test-fast clean

$(STAMP): pyproject.toml scripts/find-python310.sh
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); if [ "$$free" -lt 9 ]; then \
	  echo "n2c set-up: warning: $$free GiB free here; the venv takes about 6 GiB (PyPI's torch 2.3.1 for Linux is the CUDA build) and pip needs about 3 GiB more while it downloads"; \
	fi
	@set -e; if [ ! -x $(PY) ]; then \
	  PY310=$$(scripts/find-python310.sh); \
	  echo "creating $(VENV) with $$PY310"; \
	  "$$PY310" -m venv $(VENV); \
	fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/n2c demo -o out

# OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads sleep instead of spinning, which keeps
# the suite fast on a shared 2-core machine.
test: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

# Skip the slow end-to-end tests (Lava runs, training); CI runs everything.
test-fast: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q -m "not slow"

clean:
	rm -rf out .pytest_cache
