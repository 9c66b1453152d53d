"""Shard specs as WebDataset users write them, expanded to one URL per shard.

A spec is one or more parts joined by `::`; each part may hold brace patterns
(`train-{000000..000127}.tar`). A part is then

- a local path, a folder (resolve_shards reads the manifest beside its shards), or a glob
  (`*`, `?`, `[...]`; sorted, and one that matches nothing is an error naming it);
- `file://PATH`, the same as PATH;
- `http://...` or `https://...`;
- `pipe:COMMAND`, whose standard output is the tar (`pipe:aws s3 cp s3://b/x.tar -`,
  `pipe:gsutil cat gs://b/x.tar`, `pipe:curl -s ...`), as webdataset spells it.

`s3://` and `gs://` have no reader of their own (webdataset 1.0 has none either): the error says
which `pipe:` template to write instead.

`open_shard(url, timeout=...)` opens any of them for reading, gzip unpacked, with a read timeout
(below). This module imports no torch: config checks use it.
"""

from __future__ import annotations

import glob
import io
import os

from distgan.errors import DataError

REMOTE_PREFIXES = ("http://", "https://", "pipe:")
_GLOB_CHARS = ("*", "?", "[")
_PIPE_TEMPLATES = {
    "s3://": "pipe:aws s3 cp {url} -  (or pipe:s5cmd cat {url})",
    "gs://": "pipe:gsutil cat {url}  (or pipe:gcloud storage cat {url})",
}


def is_remote(url: str) -> bool:
    """A URL read through a connection or a command (no local file to stat)."""
    return url.startswith(REMOTE_PREFIXES)


def local_path(url: str) -> str:
    """`file://PATH` -> PATH; any other URL unchanged."""
    return url[len("file://"):] if url.startswith("file://") else url


def expand(spec: str) -> list[str]:
    """Every shard URL named by `spec`, in order (see the module docstring)."""
    import braceexpand  # a webdataset dependency

    urls: list[str] = []
    for part in spec.split("::"):
        part = part.strip()
        if not part:
            continue
        for url in braceexpand.braceexpand(part):
            for scheme, template in _PIPE_TEMPLATES.items():
                if url.startswith(scheme):
                    raise DataError(f"data.shards: {part!r}: distgan (like webdataset) has no {scheme} reader; "
                                    f"write it as {template.format(url=part)}")
            if is_remote(url):
                urls.append(url)
                continue
            path = local_path(url)
            if any(c in path for c in _GLOB_CHARS):
                matches = sorted(m for m in glob.glob(os.path.expanduser(path)) if os.path.isfile(m))
                if not matches:
                    raise DataError(f"data.shards: the glob {url!r} matches no files")
                urls.extend(matches)
            else:
                urls.append(path)
    return urls


_SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def shard_name(url: str) -> str:
    """The shard's file name, by which a manifest lists it wherever it is read from:
    `/d/train-000001.tar`, `file:///d/train-000001.tar`, `http://h/d/train-000001.tar?x=1` and
    `pipe:aws s3 cp s3://b/d/train-000001.tar -` all name `train-000001.tar`. For a `pipe:` the
    name comes from its last word that ends like a shard (else the whole command is the name)."""
    if url.startswith("pipe:"):
        words = [w.strip("'\"") for w in url[len("pipe:"):].split()]
        found = [w for w in words if w.split("?", 1)[0].endswith(_SHARD_SUFFIXES)]
        if not found:
            return url
        url = found[-1]
    path = local_path(url).split("?", 1)[0].split("#", 1)[0]
    return path.rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------- opening one shard
#
# Not webdataset.gopen, on purpose: its http(s) reader is `curl --connect-timeout 30 --retry 30 -f -s -L`
# and its `pipe:` reader a plain Popen pipe, and both block in read() for as long as the other end
# keeps the connection open and sends nothing (a server that accepts and stalls, a hung `aws s3 cp`):
# there is no read timeout, and a DataLoader worker blocked there hangs the whole run. Here every
# read of a URL or pipe waits at most `timeout` seconds (urllib with a socket timeout for http(s),
# select() on the pipe), then raises. urllib rather than a curl child: no binary to depend on, and
# the status, a refused connection or a short body arrive as exceptions with their reason, not as an
# exit code. The conventions are webdataset's: a pipe that exits non-zero is an error unless the
# status is 141 (SIGPIPE), and a gzip stream is unpacked as tarfile's `r|*` would (by name or by its
# magic bytes). A pipe's status is read when its output ends; one stopped early (the tar's end
# blocks read, or the reader done) is killed with its process group and not asked.

_BUFFER = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_SIGPIPE_STATUSES = (141, -13)  # a shell's 128 + SIGPIPE, or Popen's -SIGPIPE


class ShardReadError(OSError):
    """A shard URL that could not be read on; the message names the URL and why."""


def open_shard(url: str, *, timeout: float) -> io.BufferedIOBase:
    """A binary stream of the tar that `url` names (a path, `file://`, `http(s)://` or `pipe:`), gzip
    unpacked; use it as a context manager. A URL or pipe that sends nothing for `timeout` seconds,
    fails, or ends before its length raises ShardReadError (an OSError) naming the URL."""
    if url.startswith("pipe:"):
        stream: io.BufferedIOBase = io.BufferedReader(_PipeStream(url, timeout), _BUFFER)
    elif url.startswith(("http://", "https://")):
        stream = io.BufferedReader(_HttpStream(url, timeout), _BUFFER)
    else:
        # A local file needs no timeout of its own (a hung network file system hangs every reader alike).
        stream = open(local_path(url), "rb", buffering=_BUFFER)
    try:
        gzipped = shard_name(url).endswith((".gz", ".tgz")) or stream.peek(2)[:2] == _GZIP_MAGIC
    except BaseException:
        stream.close()
        raise
    return io.BufferedReader(_GunzipStream(stream, url), _BUFFER) if gzipped else stream


class _HttpStream(io.RawIOBase):
    """An http(s) response body; every socket read waits at most `timeout` seconds. A body shorter than
    its Content-Length is an error (http.client reports a connection closed early as a plain end)."""

    def __init__(self, url: str, timeout: float):
        import urllib.error
        import urllib.request

        self.url, self.timeout = url, timeout
        try:
            self.response = urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise ShardReadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ShardReadError(f"{url}: {self._describe(exc.reason)}") from None
        except (OSError, ValueError) as exc:
            raise ShardReadError(f"{url}: {self._describe(exc)}") from None
        length = self.response.headers.get("Content-Length")
        self.expected = int(length) if length and length.isdigit() else None
        self.received = 0

    def _describe(self, exc) -> str:
        if isinstance(exc, TimeoutError):
            return f"no response for {self.timeout:g} s (data.read_timeout)"
        return str(exc) or type(exc).__name__

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        import http.client

        try:
            n = self.response.readinto(buffer)
        except (OSError, http.client.HTTPException) as exc:
            raise ShardReadError(f"{self.url}: {self._describe(exc)} after {self.received} bytes") from None
        if n == 0 and len(buffer) and self.expected is not None and self.received < self.expected:
            raise ShardReadError(f"{self.url}: the download ended after {self.received} of {self.expected} bytes")
        self.received += n
        return n

    def close(self) -> None:
        if not self.closed and hasattr(self, "response"):
            self.response.close()
        super().close()


class _PipeStream(io.RawIOBase):
    """The standard output of `pipe:COMMAND` (run by the shell, in a process group of its own so that
    closing early stops every process it started); every read waits at most `timeout` seconds. Its
    end is checked against the exit status: non-zero other than SIGPIPE's is an error naming the
    command and the tail of what it wrote to standard error."""

    def __init__(self, url: str, timeout: float):
        import subprocess
        import tempfile

        self.url, self.command, self.timeout = url, url[len("pipe:"):].strip(), timeout
        self.stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty command cannot block on it
        self.proc = subprocess.Popen(self.command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr, start_new_session=True)
        self.fd = self.proc.stdout.fileno()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        import select

        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            raise ShardReadError(f"{self.url}: the command sent nothing for {self.timeout:g} s "
                                 f"(data.read_timeout){self._stderr_tail()}")
        n = os.readv(self.fd, [buffer])
        if n == 0 and len(buffer):
            self._check_exit()
        return n

    def _check_exit(self) -> None:
        import subprocess

        try:
            status = self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise ShardReadError(f"{self.url}: the command closed its output but did not exit within "
                                 f"{self.timeout:g} s (data.read_timeout)") from None
        if status not in (0, *_SIGPIPE_STATUSES):
            raise ShardReadError(f"{self.url}: the command exited with status {status}{self._stderr_tail()}")

    def _stderr_tail(self, limit: int = 300) -> str:
        self.stderr.seek(0, os.SEEK_END)
        size = self.stderr.tell()
        self.stderr.seek(max(0, size - limit))
        text = " | ".join(line.strip() for line in self.stderr.read().decode("utf-8", "replace").splitlines()
                          if line.strip())
        return f"; stderr: {'...' if size > limit else ''}{text}" if text else ""

    def close(self) -> None:
        if self.closed:
            return
        import signal

        if self.proc.poll() is None:  # stopped before the end: stop the command and what it started
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.stdout.close()
        self.proc.wait()
        self.stderr.close()
        super().close()


class _GunzipStream(io.RawIOBase):
    """A gzip stream unpacked on the fly (`.tar.gz`, `.tgz`); a cut or corrupt one is a ShardReadError."""

    def __init__(self, stream: io.BufferedIOBase, url: str):
        import gzip

        self.stream, self.url = stream, url
        self.gzip = gzip.GzipFile(fileobj=stream, mode="rb")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        import zlib

        try:
            return self.gzip.readinto(buffer)
        except EOFError:
            raise ShardReadError(f"{self.url}: the gzip stream ends early (truncated)") from None
        except zlib.error as exc:
            raise ShardReadError(f"{self.url}: not a valid gzip stream ({exc})") from None
        except ShardReadError:
            raise
        except OSError as exc:  # gzip.BadGzipFile
            raise ShardReadError(f"{self.url}: not a valid gzip stream ({exc})") from None

    def close(self) -> None:
        if not self.closed:
            self.gzip.close()
            self.stream.close()
        super().close()
