"""The one part of the build pyproject.toml cannot say: monitor/_speedups.c, optional.

Where no C compiler is found (the Docker image has none), the build goes on without it and
monitor/identity.py uses its Python code, which gives the same values.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("monitor._speedups", ["monitor/_speedups.c"], optional=True,
                             extra_compile_args=["-O2"])])
