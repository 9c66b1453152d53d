"""distgan.data.urls: shard specs expanded as webdataset users write them, and every kind of URL opened
with a read timeout (a real HTTP server, real pipes, gzip streams)."""

import gzip
import io
import os
import tarfile
import time

import pytest

from distgan.data.tario import iter_samples
from distgan.data.urls import ShardReadError, expand, open_shard, shard_name
from distgan.errors import DataError
from tests.data.servers import misbehaving_server, silent_listener
from tests.data.util import still_running

TIMEOUT = 2.0  # seconds: far above a local read, even on a loaded 2-core machine


@pytest.fixture(scope="module")
def tars(tmp_path_factory):
    """a.tar (40 samples of 2 members), a.tar.gz, and gz.tar: gzip bytes under a plain .tar name."""
    d = tmp_path_factory.mktemp("tars")
    with tarfile.open(d / "a.tar", "w") as t:
        for i in range(40):
            for ext in ("bin", "cls"):
                data = os.urandom(2000) if ext == "bin" else str(i % 3).encode()
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    raw = (d / "a.tar").read_bytes()
    (d / "a.tar.gz").write_bytes(gzip.compress(raw))
    (d / "gz.tar").write_bytes(gzip.compress(raw))
    return d


def _samples(url: str) -> list:
    with open_shard(url, timeout=TIMEOUT) as f:
        return list(iter_samples(f))


def test_expand_braces_lists_globs_and_file_urls(tmp_path):
    for i in range(3):
        (tmp_path / f"train-{i:06d}.tar").write_bytes(b"")
    assert expand(f"{tmp_path}/train-{{000000..000001}}.tar") == [f"{tmp_path}/train-00000{i}.tar" for i in (0, 1)]
    assert expand(f"file://{tmp_path}/train-000002.tar::{tmp_path}/train-000000.tar") == [
        f"{tmp_path}/train-000002.tar", f"{tmp_path}/train-000000.tar"]
    assert expand(f"{tmp_path}/train-*.tar") == [f"{tmp_path}/train-00000{i}.tar" for i in range(3)]
    with pytest.raises(DataError, match="the glob .*nothing-.*tar' matches no files"):
        expand(f"{tmp_path}/nothing-*.tar")
    remote = "http://h/d/train-{000000..000001}.tar::pipe:cat /d/x.tar"
    assert expand(remote) == ["http://h/d/train-000000.tar", "http://h/d/train-000001.tar", "pipe:cat /d/x.tar"]
    with pytest.raises(DataError, match=r"no s3:// reader; write it as pipe:aws s3 cp s3://b/x.tar -"):
        expand("s3://b/x.tar")


def test_shard_name_is_the_file_name_wherever_it_is_read_from():
    for url in ("/d/train-000001.tar", "file:///d/train-000001.tar", "http://h/d/train-000001.tar?sig=1",
                "pipe:aws s3 cp s3://b/d/train-000001.tar -", "pipe:curl -s 'https://h/train-000001.tar'"):
        assert shard_name(url) == "train-000001.tar", url
    assert shard_name("https://h/x/a.tgz") == "a.tgz"


def test_every_kind_of_url_reads_the_same_samples(tars):
    plain = _samples(str(tars / "a.tar"))
    assert len(plain) == 40 and plain[3][1]["cls"] == b"0"
    with misbehaving_server(tars) as server:
        for url in (f"file://{tars}/a.tar", f"{tars}/a.tar.gz", f"{tars}/gz.tar",  # gzip by name and by bytes
                    f"{server.url}/a.tar", f"{server.url}/a.tar.gz", f"{server.url}/gz.tar",
                    f"pipe:cat {tars}/a.tar", f"pipe:cat {tars}/a.tar.gz", f"pipe:cat {tars}/gz.tar"):
            assert _samples(url) == plain, url


def test_http_errors_name_the_url(tars):
    with misbehaving_server(tars, {"a.tar": "cut"}) as server:
        with pytest.raises(ShardReadError, match=r"/nope.tar: HTTP 404"):
            _samples(f"{server.url}/nope.tar")
        with pytest.raises(ShardReadError, match=r"/a.tar: the download ended after \d+ of \d+ bytes"):
            _samples(f"{server.url}/a.tar")
        with pytest.raises(ShardReadError, match=r"/a.tar.gz: .*ended"):
            server.faults["a.tar.gz"] = "cut"
            _samples(f"{server.url}/a.tar.gz")
        refused = server.url
    with pytest.raises(ShardReadError, match=rf"{refused}/a.tar: .*Connection refused"):
        _samples(f"{refused}/a.tar")


def test_a_server_or_pipe_that_sends_nothing_times_out(tars):
    with silent_listener() as url:  # accepts, never answers
        t0 = time.monotonic()
        with pytest.raises(ShardReadError, match=r"/a.tar: no response for 2 s \(data.read_timeout\)"):
            _samples(f"{url}/a.tar")
        assert time.monotonic() - t0 < 3 * TIMEOUT
    t0 = time.monotonic()
    with pytest.raises(ShardReadError, match=r"pipe:sleep 30: the command sent nothing for 2 s"):
        _samples("pipe:sleep 30")
    with pytest.raises(ShardReadError, match=r"sent nothing for 2 s"):  # stalls after part of the tar
        _samples(f"pipe:head -c 30000 {tars}/a.tar; sleep 30")
    assert time.monotonic() - t0 < 6 * TIMEOUT


def test_a_pipe_that_fails_names_the_command_and_its_stderr(tars):
    with pytest.raises(ShardReadError, match=r"pipe:cat /no/such.tar: the command exited with status 1; "
                                             r"stderr: cat: /no/such.tar: No such file"):
        _samples("pipe:cat /no/such.tar")
    with pytest.raises(ShardReadError, match=r"exited with status 3; stderr: lost the connection"):
        _samples(f"pipe:head -c 30000 {tars}/a.tar; echo lost the connection >&2; exit 3")
    with pytest.raises(ShardReadError, match=r"a.tar.gz: the gzip stream ends early"):
        _samples(f"pipe:head -c 30000 {tars}/a.tar.gz")
    # SIGPIPE's status is no error (webdataset's convention), and a command cut off when the reader
    # stops early is stopped with everything it started
    assert len(_samples(f"pipe:cat {tars}/a.tar; exit 141")) == 40
    with open_shard("pipe:yes | cat", timeout=TIMEOUT) as f:
        assert f.read(10) == b"y\ny\ny\ny\ny\n"
        group = f.raw.proc.pid
    assert still_running(lambda stat, cmdline: int(stat[2]) == group) == []  # stat[2]: the process group
