"""Builds the compiled feature kernels (serving/feature_kernels.pyx); everything else is in
pyproject.toml.

The extension is optional: without a C compiler the install still works and the feature
engine computes the same results in Python (slower; `make test` fails
`test_the_kernels_are_built`, so CI notices). The kernels carry the SHA-256 of the source
they were built from, and the engine does not use kernels built from another source (an
edited .pyx not rebuilt, a failed rebuild that left the old module)."""

import hashlib
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

SOURCE = Path(__file__).parent / "serving" / "feature_kernels.pyx"
kernels = cythonize(
    [
        Extension(
            "serving.feature_kernels",
            [str(SOURCE.relative_to(SOURCE.parents[1]))],
            # No fused multiply-add: the kernels must give the Python code's doubles exactly.
            extra_compile_args=["-O2", "-ffp-contract=off"],
        )
    ],
    language_level=3,
    quiet=True,
    compile_time_env={"SOURCE_SHA256": hashlib.sha256(SOURCE.read_bytes()).hexdigest()},
)
for extension in kernels:
    extension.optional = True  # cythonize does not carry it over from the Extension
setup(ext_modules=kernels)
