"""Atomic output of `distgan data pack`: OUT changes only when the whole pack is done.

Shards are written into `OUT/.distgan-pack/` (hidden, and the stream finds
shards only through `OUT/manifest.json`). Once the last shard is fsynced the
manifest is written there too: from that moment the staged pack is complete.
Publishing renames every shard into OUT and the manifest last, so a reader
sees either the old OUT or the whole new pack.

- A pack that fails (bad input with `--on-error fail`, Ctrl-C, a full disk)
  removes its staging folder, and OUT itself if it created it.
- A pack killed while writing (SIGKILL, power loss) leaves only the hidden
  staging folder; the next pack into OUT removes it and starts over.
- A pack killed while publishing leaves a staged manifest; the next pack into
  OUT finishes publishing it (every shard is checked by its staged manifest).
- Two packs into one OUT at the same time: the second stops (a lock on OUT).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from distgan.data.manifest import MANIFEST, DataError, Manifest

STAGING = ".distgan-pack"


def _fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputDir:
    """`with OutputDir(out, prefix, say) as staging:` write into `staging.path`, then `publish(manifest)`."""

    def __init__(self, out: Path, prefix: str, say: Callable[[str], None]):
        self.out, self.prefix, self.say = Path(out), prefix, say
        self.path = self.out / STAGING
        self._created_out = False
        self._lock_fd = None
        self._published = False

    def __enter__(self) -> "OutputDir":
        if self.out.exists() and not self.out.is_dir():
            raise DataError(f"{self.out} is a file; the output must be a folder")
        self._created_out = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._recover()
            self._refuse_existing()
            self.path.mkdir()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self._published:
                shutil.rmtree(self.path, ignore_errors=True)
                if self._created_out and not any(self.out.iterdir()):
                    self.out.rmdir()  # leave things as they were: no OUT at all
        finally:
            self._unlock()

    # ------------------------------------------------------------------ lock

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; concurrent packs are the user's to avoid
            return
        self._lock_fd = os.open(self.out, os.O_RDONLY)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise DataError(f"another `distgan data pack` is writing into {self.out}; wait for it or "
                            f"pack into another folder") from None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ------------------------------------------------------------------ what an earlier run left

    def _recover(self) -> None:
        if not self.path.exists():
            return
        if (self.path / MANIFEST).is_file():
            man = Manifest.load(self.path)
            self._move_into_out(man)
            self.say(f"finished publishing the complete pack an interrupted run left in {self.path}")
            return
        shards = len(list(self.path.glob("*.tar")))
        shutil.rmtree(self.path)
        self.say(f"removed the unfinished pack ({shards} shards) an interrupted run left in {self.path}")

    def _refuse_existing(self) -> None:
        if (self.out / MANIFEST).is_file():
            man = Manifest.load(self.out)
            raise DataError(f"{self.out} already holds a complete pack ({man.total} samples in "
                            f"{len(man.shards)} shards, from {man.source or 'an unnamed source'}); pack into a "
                            f"new folder, or delete {self.out / MANIFEST} and its shards to pack again")
        stale = sorted(self.out.glob(f"{self.prefix}-*.tar"))
        if stale:
            raise DataError(f"{self.out} holds {len(stale)} {self.prefix}-*.tar shards but no {MANIFEST} "
                            f"(left by an interrupted pack of an older distgan?); delete them or pack into "
                            f"a new folder")

    # ------------------------------------------------------------------ publishing

    def publish(self, man: Manifest) -> None:
        """Every shard is complete in the staging folder: move the pack into OUT."""
        man.save(self.path)  # the staged pack is complete from here on (see `_recover`)
        _fsync_dir(self.path)
        self._move_into_out(man)
        self._published = True

    def _move_into_out(self, man: Manifest) -> None:
        for entry in man.shards:
            staged, final = self.path / entry.name, self.out / entry.name
            if staged.is_file():
                os.replace(staged, final)
            elif not final.is_file() or final.stat().st_size != entry.bytes:
                raise DataError(f"{self.path}: the staged pack lost {entry.name}; delete {self.path} and "
                                f"pack again")
        _fsync_dir(self.out)
        # The manifest last: until it is in place no reader looks at the shards.
        os.replace(self.path / MANIFEST, self.out / MANIFEST)
        _fsync_dir(self.out)
        shutil.rmtree(self.path, ignore_errors=True)
