"""Builds the compiled feature kernels (serving/feature_kernels.pyx); everything else is in
pyproject.toml. The extension is optional: without a C compiler the install still works and
the feature engine computes the same results in Python (slower)."""

from Cython.Build import cythonize
from setuptools import Extension, setup

kernels = Extension(
    "serving.feature_kernels",
    ["serving/feature_kernels.pyx"],
    # No fused multiply-add: the kernels must give the Python code's doubles, bit for bit.
    extra_compile_args=["-O2", "-ffp-contract=off"],
    optional=True,
)
setup(ext_modules=cythonize([kernels], language_level=3, quiet=True))
