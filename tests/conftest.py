"""Suite-wide collection order: slow tests first.

CI runs the suite on two pytest-xdist workers (`-n 2 --dist loadgroup`), which hand out
tests in collection order. Starting the multi-minute runs (quality checks, Slurm jobs,
2-process parity) first keeps one of them from being the last test while the other worker
sits idle. Among them the quality checks go first: they hold the longest single tests (the DCGAN
digits run, ~7 minutes), which must not start late. The order within each kind is unchanged.
"""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    def kind(item) -> tuple[bool, bool]:
        slow = item.get_closest_marker("slow") is not None
        return (not slow, "tests/quality/" not in item.nodeid)

    items.sort(key=kind)
