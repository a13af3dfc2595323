# tinyllm
#   make             install the package and its dependencies for $(PYTHON), build the C kernels,
#                    and the CUDA kernels when nvcc is on the PATH
#   make cuda        the CUDA kernels (nvcc, sm_80 and sm_90, warnings are errors)
#   make cuda-emu    the CUDA kernels built for the CPU emulation (csrc/cuda/emu; needs g++)
#   make test        the test suite, then the CUDA tests on the emulation
#   make bench       the benchmarks
#   make mpi         OpenMPI (apt-get, where there is one) and mpi4py, for data-parallel training
#   make sanitize    the kernel tests against an AddressSanitizer + UBSan build
#   make gpu-check   build, test and time the CUDA backend on this machine's GPU (tools/gpu_check.py;
#                    without a GPU a dry run on the emulation); GPU_CHECK_ARGS="--only tests"
#   make gpu-wheels  fetch cffi + pycparser wheels into wheels/ for a GPU machine with no network
#   make clean
# Options: PYTHON=python3.12, CC=clang, CFLAGS="-O2", NO_OMP=1 (single-threaded kernels),
# DEBUG=1 (-O0 -g, no -march=native), NO_CUDA=1 (skip the CUDA build), NVCC=/path/to/nvcc,
# CUDA_ARCHS="80 90" (the GPUs to compile for).
PYTHON ?= python3
CC ?= cc
ifeq ($(DEBUG),1)
CFLAGS ?= -O0 -g
else
CFLAGS ?= -O3 -march=native
endif
# -ffp-contract=fast: -std=c11 alone stops GCC from fusing a*b+c into one FMA.
# -fno-trapping-math: the exp loops (softmax, attention, cross-entropy, SiLU, decoding) pick
# between results with ?:, and GCC will not compute both sides of a pick that might raise a
# floating-point exception; without AVX-512's masked instructions (AVX2) every one of those
# loops stayed scalar: SiLU ran at 0.5x NumPy on a Zen 3. No value changes, only the
# exception flags, which tinyllm never reads (clang assumes this already).
# -fno-math-errno: sqrtf then never sets errno, which tinyllm never reads either; with
# it set, AdamW's loop held a call to sqrtf for negative inputs and stayed scalar on every CPU.
WARN := -std=c11 -ffp-contract=fast -fno-trapping-math -fno-math-errno -Wall -Wextra \
	-Wno-unused-parameter
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
# -z nodelete: the library (and libgomp with it) stays mapped until the process ends. Python
# unloads it at exit while worker threads may still be spinning in it (OpenMP's with
# OMP_WAIT_POLICY=active, the decode pool's for SPIN_US): unmapped, that was a segfault at exit
NODELETE := $(shell echo 'int f(void){return 0;}' | $(CC) -shared -fPIC -Wl,-z,nodelete -x c - -o /dev/null 2>/dev/null && echo -Wl,-z,nodelete)
# the library is rebuilt when the compiler or its flags change, not only the sources
FLAGS_STAMP := build/cflags.txt
BUILD_FLAGS := $(CC) $(CFLAGS) $(OMP) $(SIMD) $(WARN) $(NODELETE)

# CUDA: built when nvcc is found, unless NO_CUDA=1; the CPU build never depends on it
NVCC ?= nvcc
ifneq ($(NO_CUDA),1)
HAVE_NVCC := $(shell command -v $(NVCC) 2>/dev/null)
endif
CUDA_ARCHS ?= 80 90
CUDA_SRCS := $(wildcard csrc/cuda/*.cu)
CUDA_DEPS := $(wildcard csrc/cuda/*.cuh) csrc/cuda/tinyllm_cuda.h csrc/half.h
CUDA_LIB := tinyllm/backends/libtinyllm_cuda.so
CUDA_HEADER := tinyllm/backends/tinyllm_cuda.h
# --threads 0: the architectures of one file compile in parallel (31 s -> 23 s on 2 cores)
NVCC_FLAGS := -std=c++17 -O3 -Icsrc/cuda $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
	-Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-fPIC -Werror all-warnings --threads 0
CUDA_OBJS := $(patsubst csrc/cuda/%.cu,build/cuda/%.o,$(CUDA_SRCS))
# the emulation: the same .cu sources compiled as C++ against csrc/cuda/emu/cuda_emu.h
CXX_FOUND := $(shell command -v $(CXX) 2>/dev/null)
EMU_DIR := build/cuda-emu
EMU_LIB := $(EMU_DIR)/libtinyllm_cuda.so
EMU_WARN := -std=c++17 -fPIC -DTINYLLM_CUDA_EMU -Icsrc/cuda -Wall -Wextra -Werror \
	-Wno-unused-parameter -Wno-unknown-pragmas
EMU_SRCS := $(wildcard csrc/cuda/emu/*.cpp)
EMU_BUILD = $(CXX) $(1) $(EMU_WARN) -shared -o $(2) -x c++ $(CUDA_SRCS) -x none $(EMU_SRCS) -lpthread
SANITIZE_CUDA_DIR := build/sanitize/cuda
CUDA_TESTS := $(wildcard tests/test_cuda*.py)

.PHONY: all install lib cuda cuda-status cuda-emu test bench mpi sanitize gpu-check gpu-wheels clean FORCE

all: install lib $(if $(HAVE_NVCC),cuda) cuda-status

install:
	@$(PYTHON) -c "import sys; assert sys.version_info >= (3, 9)" 2>/dev/null \
		|| { echo "make: $(PYTHON) is missing or older than 3.9; run make PYTHON=python3.11 (or another)"; exit 1; }
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e .

lib: $(LIB) $(HEADER)
	@echo "C kernels: $(LIB) [$(CC) $(CFLAGS)] OpenMP $(if $(OMP),✓,✗ $(if $(filter 1,$(NO_OMP)),(NO_OMP=1),(install libgomp / use gcc for multithreaded kernels)))"
	@$(PYTHON) -c "import tinyllm; print('tinyllm', tinyllm.__version__, 'for', __import__('sys').executable, \
		'| backends:', ', '.join(tinyllm.backends.available_backends()))"
	@$(PYTHON) -c "from tinyllm.backends import c_kernels; print('CPU:', c_kernels.describe_cpu())"

$(LIB): $(SRCS) $(wildcard csrc/*.h) $(FLAGS_STAMP)
	$(BUILD_FLAGS) -fPIC -shared -o $@ $(SRCS) -lm

$(FLAGS_STAMP): FORCE
	@mkdir -p build
	@echo '$(BUILD_FLAGS)' | cmp -s - $@ || echo '$(BUILD_FLAGS)' > $@

$(HEADER): csrc/tinyllm.h
	cp $< $@

cuda: $(CUDA_LIB) $(CUDA_HEADER)

CUDA_BUILT := $(CUDA_LIB) [nvcc $(addprefix sm_,$(CUDA_ARCHS))] nvcc ✓
CUDA_SKIPPED := not built, nvcc ✗ ($(if $(filter 1,$(NO_CUDA)),NO_CUDA=1,install the CUDA toolkit for the GPU backend))
cuda-status:
	@echo "CUDA kernels: $(if $(HAVE_NVCC),$(CUDA_BUILT),$(CUDA_SKIPPED))"

build/cuda/%.o: csrc/cuda/%.cu $(CUDA_DEPS)
	@mkdir -p build/cuda
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@

# cudart is linked statically (nvcc's default): the library needs only the driver at run time
$(CUDA_LIB): $(CUDA_OBJS)
	$(NVCC) -shared -o $@ $^

$(CUDA_HEADER): csrc/cuda/tinyllm_cuda.h
	cp $< $@

cuda-emu: $(EMU_LIB) $(EMU_DIR)/tinyllm_cuda.h

$(EMU_LIB): $(CUDA_SRCS) $(CUDA_DEPS) $(wildcard csrc/cuda/emu/*)
	@mkdir -p $(EMU_DIR)
	$(call EMU_BUILD,-O2 -g,$@)

$(EMU_DIR)/tinyllm_cuda.h: csrc/cuda/tinyllm_cuda.h
	@mkdir -p $(EMU_DIR)
	cp $< $@

# the CUDA tests run a second time on the emulation, where CI (no GPU) checks the kernels, and
# the kernel tests a third time with the emulated threads in reverse order: a missing barrier
# then usually changes a result (csrc/cuda/emu/README.md)
# With pytest-xdist installed (.ci/run installs it) the test files run side by side, one
# worker per core, each file's tests on one worker (its module fixtures build once); the
# OpenMP threads of two workers then share the cores, so they sleep instead of spinning.
PYTEST_JOBS = $(shell $(PYTHON) -c "import xdist" 2>/dev/null && echo "-n auto --dist loadfile")
PYTEST = $(if $(PYTEST_JOBS),OMP_WAIT_POLICY=passive )$(PYTHON) -m pytest -q $(PYTEST_JOBS)
test: all $(if $(CXX_FOUND),cuda-emu)
	@$(PYTHON) -m pytest --version >/dev/null 2>&1 \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check pytest
	$(PYTEST) tests
ifneq ($(CXX_FOUND),)
	TINYLLM_CUDA_LIB=$(EMU_LIB) $(PYTEST) $(CUDA_TESTS)
	TINYLLM_EMU_ORDER=reverse TINYLLM_CUDA_LIB=$(EMU_LIB) $(PYTEST) \
		$(filter-out tests/test_cuda.py,$(CUDA_TESTS))
else
	@echo "make test: no C++ compiler ($(CXX)), so the CUDA kernels were not tested on the emulation"
endif

bench: all
	$(PYTHON) examples/benchmark.py

# optional: without it everything else works and tests/test_distributed.py skips its MPI runs
APT_GET := $(shell command -v apt-get 2>/dev/null)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
mpi:
	@command -v mpirun >/dev/null || { [ -n "$(APT_GET)" ] && \
		$(SUDO) apt-get install -y -q openmpi-bin libopenmpi-dev >/dev/null; } || true
	@$(PYTHON) -c "import mpi4py" 2>/dev/null || $(PYTHON) -m pip install --quiet \
		--disable-pip-version-check mpi4py || true
	@echo "MPI: mpirun $$(command -v mpirun >/dev/null && mpirun --version 2>/dev/null | head -1 | \
		sed 's/^mpirun //') $$(command -v mpirun >/dev/null && echo ✓ || echo '✗ (apt-get install \
		openmpi-bin libopenmpi-dev, or your cluster'"'"'s MPI module)'), mpi4py $$($(PYTHON) -c \
		"import mpi4py; from mpi4py import MPI; print(mpi4py.__version__, '✓')" 2>/dev/null \
		|| echo '✗ (pip install mpi4py; it needs an MPI library, libopenmpi-dev)')"

# ASan and UBSan need their runtime loaded before Python starts: LD_PRELOAD.
# Python's own allocations are not freed at exit, so leak detection is off.
# The CUDA kernels are checked too, on the emulation: an out-of-bounds read in a kernel stops it.
SANITIZE_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
SANITIZE_RUN = LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	ASAN_OPTIONS=detect_leaks=0 $(PYTEST) -p no:cacheprovider
sanitize: install $(HEADER)
	@mkdir -p build/sanitize
	$(CC) $(SANITIZE_FLAGS) $(OMP) $(SIMD) $(WARN) -fPIC -shared -o $(SANITIZE_LIB) $(SRCS) -lm
	TINYLLM_LIB=$(SANITIZE_LIB) $(SANITIZE_RUN) tests/test_c_*.py
ifneq ($(CXX_FOUND),)
	@mkdir -p $(SANITIZE_CUDA_DIR)
	$(call EMU_BUILD,$(SANITIZE_FLAGS),$(SANITIZE_CUDA_DIR)/libtinyllm_cuda.so)
	cp csrc/cuda/tinyllm_cuda.h $(SANITIZE_CUDA_DIR)/
	TINYLLM_CUDA_LIB=$(SANITIZE_CUDA_DIR)/libtinyllm_cuda.so $(SANITIZE_RUN) $(filter-out tests/test_cuda.py,$(CUDA_TESTS))
endif

# the GPU check builds what it needs itself (make lib, make cuda CUDA_ARCHS=<this GPU>), so it
# depends on nothing here: `all` would run pip install, and the GPU machine has no network
GPU_CHECK_ARGS ?=
gpu-check:
	$(PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

# the wheels the GPU machine lacks (it has numpy, pytest, regex and torch, but not cffi),
# for each Python it may run, on x86-64 Linux; wheels/ is ignored by git and carried to it
GPU_WHEEL_PYTHONS := 3.11 3.12 3.13
gpu-wheels:
	@mkdir -p wheels
	for v in $(GPU_WHEEL_PYTHONS); do \
		$(PYTHON) -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
			--python-version $$v --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
			-d wheels cffi pycparser || exit 1; \
	done
	@ls wheels

clean:
	rm -rf build dist *.egg-info .pytest_cache $(LIB) $(HEADER) $(CUDA_LIB) $(CUDA_HEADER)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
