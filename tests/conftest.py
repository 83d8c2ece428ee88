"""Test-wide settings.

One intra-op thread per test process: the suite runs two pytest-xdist workers on a 2-core machine, and with two
OpenMP threads per process every parallel region waits for a descheduled thread (measured 30-70x slower steps).
Set before any test module imports torch; subprocesses started by tests inherit it."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
