# tinyllm: `make` installs the package and its dependencies for $(PYTHON),
# `make test` runs the test suite, `make bench` the benchmarks.
PYTHON ?= python3

.PHONY: all install test bench clean

all: install

install:
	@$(PYTHON) -c "import sys; assert sys.version_info >= (3, 9), 'tinyllm needs Python 3.9 or newer'" \
		|| { echo "make: $(PYTHON) is older than 3.9; run make PYTHON=python3.11 (or another)"; exit 1; }
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e .
	@$(PYTHON) -c "import numpy, cffi, regex, tinyllm; print('tinyllm', tinyllm.__version__, \
		'installed for', __import__('sys').executable, '| numpy', numpy.__version__, \
		'| backends:', ', '.join(tinyllm.backends.available_backends()))"

test: install
	@$(PYTHON) -m pytest --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check pytest
	$(PYTHON) -m pytest -q tests

bench: install
	$(PYTHON) examples/benchmark.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
