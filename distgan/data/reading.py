"""One shard's samples in file order, re-opened where a read fails.

Every reader of shard samples (the training stream, `distgan.data.pipeline.read_shards`, and the
in-order reads of `distgan.data.reference`) goes through `read_samples`. A URL that fails mid-read
(HTTP 404, connection refused, a download cut short, a `pipe:` command that exits non-zero, a
server or command that sends nothing for `data.read_timeout` seconds) is opened again up to
`data.retries` times, after a short backoff, and the samples it already gave are read past
without being given again: a retry that succeeds gives exactly the sequence one clean read gives,
so the stream's shuffle, positions and resume see no difference. After the last retry the error
is handed to the caller, which counts the shard's remaining samples as skipped
(`data.max_skipped_fraction`).

Local files are retried only on I/O errors: a tar or gzip stream that is corrupt on disk reads the
same way every time, so it is reported at once, as before retries existed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

from distgan.data.tario import TarFormatError, iter_samples
from distgan.data.urls import ShardReadError, is_remote, open_shard

READ_ERRORS = (OSError, TarFormatError)


@dataclass(frozen=True)
class ReadPolicy:
    retries: int = 3  # data.retries: re-opens of a shard whose read failed
    timeout: float = 60.0  # data.read_timeout: seconds a URL or pipe may send nothing
    backoff: float = 0.5  # seconds before the first re-open, doubled before each next one (at most 8)

    @classmethod
    def of(cls, data_cfg) -> "ReadPolicy":
        return cls(retries=data_cfg.retries, timeout=data_cfg.read_timeout)

    def pause(self, retry: int) -> float:
        """Seconds to wait before re-open number `retry` (1, 2, ...)."""
        return min(self.backoff * 2 ** (retry - 1), 8.0)


class ShardEndedEarly(ShardReadError):
    """A URL's tar ended cleanly before the samples its manifest lists: a cut the transport missed."""


def read_samples(url: str, *, count: int, bad_keys: frozenset = frozenset(), policy: ReadPolicy,
                 failures: list) -> Iterator[tuple[str, dict]]:
    """(key, fields) of each sample of the shard at `url`, in file order, `bad_keys` left out.

    A failed read is retried as the module docstring says. When the last retry fails too, the error
    (one line, `describe`) is appended to `failures` and the iteration ends; the caller knows from `count` how many samples
    were lost. The sample being read when a read fails is held back (the tar reader hands over what
    it had of it), so a retry gives it whole; after the last retry it is given as it was read.
    """
    given = 0  # samples of the file passed on (or left out as bad): a re-open reads past them
    usable = 0  # of them, not in bad_keys
    attempt = 0
    while True:
        held = None
        seen = 0
        try:
            with open_shard(url, timeout=policy.timeout) as f:
                for sample in iter_samples(f):
                    seen += 1
                    if seen <= given:
                        continue
                    if held is not None:
                        given += 1
                        if held[0] not in bad_keys:
                            usable += 1
                            yield held
                    held = sample
            if held is not None:
                given += 1
                if held[0] not in bad_keys:
                    usable += 1
                    yield held
                held = None
            if usable < count and is_remote(url):
                raise ShardEndedEarly(f"{url}: the tar ended after {usable} of the {count} samples the manifest lists")
            return
        except READ_ERRORS as exc:
            if attempt >= policy.retries or not _worth_retrying(url, exc):
                if held is not None and held[0] not in bad_keys:
                    yield held  # what the tar reader had of it: the decoder names what is missing
                failures.append(describe(exc) + (f"; {attempt} retries failed too" if attempt else ""))
                return
            attempt += 1
            time.sleep(policy.pause(attempt))


def _worth_retrying(url: str, exc: BaseException) -> bool:
    """Anything that fails through a connection or a command may go right the next time; a local
    file's content reads the same again (only its I/O errors are retried)."""
    if is_remote(url):
        return True
    return isinstance(exc, OSError) and not isinstance(exc, ShardReadError)


def describe(exc: BaseException) -> str:
    """An error as one line for a warning or a DataError (a TarFormatError's message lacks its URL,
    which the caller names)."""
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"
