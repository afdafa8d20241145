"""Package discovery: `operator/` is installed under the import name `pd_operator`.

`operator` is a standard-library module that Python imports at start-up, so the
directory cannot be imported under its own name; everything else is found as usual.
"""

from setuptools import find_packages, setup

core = find_packages(include=["pdcore", "pdcore.*", "pdsim", "pdsim.*"])
op = ["pd_operator"] + ["pd_operator." + name for name in find_packages(where="operator")]
setup(
    packages=core + op,
    package_dir={"pd_operator": "operator"},
    package_data={"pdcore": ["py.typed", "proto/*.pyi"], "pd_operator": ["*.yaml"]},
)
