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
which `pipe:` template to write instead. This module imports no torch: config checks use it.
"""

from __future__ import annotations

import glob
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
