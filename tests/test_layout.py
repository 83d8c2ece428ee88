"""Promises about the repository itself: import names, torch-free runtime, file sizes, equation docstrings."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("caeav", "export", "runtime", "calibration", "benchmarks")


def _py_files():
    for d in CODE_DIRS:
        yield from sorted((ROOT / d).rglob("*.py"))


def test_mapped_packages_import_under_the_caeav_namespace():
    import caeav.calibration
    import caeav.export
    import caeav.runtime

    assert Path(caeav.export.__file__).parent == ROOT / "export"
    assert Path(caeav.runtime.__file__).parent == ROOT / "runtime"
    assert Path(caeav.calibration.__file__).parent == ROOT / "calibration"


def test_runtime_and_cli_import_without_torch():
    code = (
        "import sys, caeav, caeav.config, caeav.runtime, caeav.metrics, caeav.cli.main; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_no_module_over_400_lines():
    big = {str(p.relative_to(ROOT)): n for p in _py_files() if (n := len(p.read_text().splitlines())) > 400}
    assert not big, f"split these by what they hold: {big}"


def test_nothing_reads_the_shared_folder():
    offenders = [str(p.relative_to(ROOT)) for p in _py_files() if "../shared" in p.read_text() or "/work/shared" in p.read_text()]
    assert not offenders
