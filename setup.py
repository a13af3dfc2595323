"""pip install . (or pip install -e . while developing).

The run-time dependencies are numpy, cffi and regex; everything else
(PyTorch for reference benchmarks, matplotlib for PNG loss curves) is
optional and imported where it is used.
"""
import shutil
import subprocess

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithKernels(build_py):
    """Compile the C (and, with nvcc, CUDA) kernels with the Makefile, the one place that knows the flags."""

    def run(self):
        try:
            subprocess.run(["make", "tinyllm/backends/libtinyllm.so", "tinyllm/backends/tinyllm.h"],
                           check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"warning: C kernels not built ({e}); tinyllm will use its NumPy backend")
        if shutil.which("nvcc"):
            try:
                subprocess.run(["make", "cuda"], check=True)
            except (OSError, subprocess.CalledProcessError) as e:
                print(f"warning: CUDA kernels not built ({e}); the CPU backends still work")
        super().run()


setup(
    name="tinyllm",
    version="0.1.0",
    description="A GPT built from scratch in Python + NumPy, with C and CUDA kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tinyllm", "tinyllm.*"]),
    package_data={"tinyllm.backends": ["libtinyllm.so", "tinyllm.h", "libtinyllm_cuda.so", "tinyllm_cuda.h"]},
    cmdclass={"build_py": BuildWithKernels},
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "cffi>=1.15", "regex>=2022.1"],
    extras_require={"test": ["pytest>=7"], "plot": ["matplotlib"]},
    entry_points={"console_scripts": ["tinyllm=tinyllm.cli:main"]},
)
