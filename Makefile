# tinyllm
#   make             install the package and its dependencies for $(PYTHON), build the C kernels
#   make test        the test suite        make bench      the benchmarks
#   make sanitize    the kernel tests against an AddressSanitizer + UBSan build
#   make clean
# Options: PYTHON=python3.12, CC=clang, CFLAGS="-O2", NO_OMP=1 (single-threaded kernels),
# DEBUG=1 (-O0 -g, no -march=native).
PYTHON ?= python3
CC ?= cc
ifeq ($(DEBUG),1)
CFLAGS ?= -O0 -g
else
CFLAGS ?= -O3 -march=native
endif
# -ffp-contract=fast: -std=c11 alone stops GCC from fusing a*b+c into one FMA
WARN := -std=c11 -ffp-contract=fast -Wall -Wextra -Wno-unused-parameter
SRCS := $(wildcard csrc/*.c)
LIB := tinyllm/backends/libtinyllm.so
HEADER := tinyllm/backends/tinyllm.h
SANITIZE_LIB := build/sanitize/libtinyllm.so

# OpenMP: used when the compiler accepts -fopenmp, unless NO_OMP=1 (then -fopenmp-simd keeps
# the vectorization pragmas without threads or libgomp)
ifneq ($(NO_OMP),1)
OMP := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp -x c - -o /dev/null 2>/dev/null && echo -fopenmp)
endif
SIMD := $(if $(OMP),,-fopenmp-simd)
# the library is rebuilt when the compiler or its flags change, not only the sources
FLAGS_STAMP := build/cflags.txt
BUILD_FLAGS := $(CC) $(CFLAGS) $(OMP) $(SIMD) $(WARN)

.PHONY: all install lib test bench sanitize clean FORCE

all: install lib

install:
	@$(PYTHON) -c "import sys; assert sys.version_info >= (3, 9)" 2>/dev/null \
		|| { echo "make: $(PYTHON) is missing or older than 3.9; run make PYTHON=python3.11 (or another)"; exit 1; }
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e .

lib: $(LIB) $(HEADER)
	@echo "C kernels: $(LIB) [$(CC) $(CFLAGS)] OpenMP $(if $(OMP),✓,✗ $(if $(filter 1,$(NO_OMP)),(NO_OMP=1),(install libgomp / use gcc for multithreaded kernels)))"
	@$(PYTHON) -c "import tinyllm; print('tinyllm', tinyllm.__version__, 'for', __import__('sys').executable, \
		'| backends:', ', '.join(tinyllm.backends.available_backends()))"

$(LIB): $(SRCS) csrc/tinyllm.h $(FLAGS_STAMP)
	$(BUILD_FLAGS) -fPIC -shared -o $@ $(SRCS) -lm

$(FLAGS_STAMP): FORCE
	@mkdir -p build
	@echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' > $@

$(HEADER): csrc/tinyllm.h
	cp $< $@

test: all
	@$(PYTHON) -m pytest --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check pytest
	$(PYTHON) -m pytest -q tests

bench: all
	$(PYTHON) examples/benchmark.py

# ASan and UBSan need their runtime loaded before Python starts: LD_PRELOAD.
# Python's own allocations are not freed at exit, so leak detection is off.
sanitize: install $(HEADER)
	@mkdir -p build/sanitize
	$(CC) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
		$(OMP) $(SIMD) $(WARN) -fPIC -shared -o $(SANITIZE_LIB) $(SRCS) -lm
	LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
		ASAN_OPTIONS=detect_leaks=0 TINYLLM_LIB=$(SANITIZE_LIB) \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/test_c_*.py

clean:
	rm -rf build dist *.egg-info .pytest_cache $(LIB) $(HEADER)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
