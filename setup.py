"""Package layout: `caeav/` plus three top-level folders mapped into the `caeav` namespace.

`export/`, `runtime/` and `calibration/` are their own folders (they are separate concerns) but are imported as
`caeav.export`, `caeav.runtime` and `caeav.calibration`, never as generic top-level names.
"""
from setuptools import find_packages, setup

MAPPED = {"caeav.export": "export", "caeav.runtime": "runtime", "caeav.calibration": "calibration"}

packages = find_packages(include=["caeav", "caeav.*"])
for name, folder in MAPPED.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where=folder)]

setup(packages=packages, package_dir={"caeav": "caeav", **MAPPED})
