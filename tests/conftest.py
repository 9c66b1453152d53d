"""Suite-wide collection order: slow tests first.

CI runs the suite on two pytest-xdist workers (`-n 2 --dist loadgroup`), which hand out
tests in collection order. Starting the multi-minute runs (quality checks, Slurm jobs,
2-process parity) first keeps one of them from being the last test while the other worker
sits idle. The order within each kind is unchanged.
"""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
