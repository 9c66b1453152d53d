"""resolve_shards: data.shards (+ data.manifest) -> shards with their counts, or one clear error."""

import json
import shutil

import pytest

from distgan.config import load_config, unreachable_files
from distgan.data.manifest import MANIFEST, DataError, Manifest, resolve_shards
from distgan.errors import ConfigError
from tests.data.util import pack_ids


@pytest.fixture
def ids25(tmp_path):
    """Ids 0..24 in shards of 10, 10, 5, with manifest.json beside them."""
    return pack_ids(tmp_path, "ids", 25, shard_size=10)


def _elsewhere(ids25, tmp_path, names=None):
    """The pack's manifest copied to another folder, its entries renamed by `names` (old -> new)."""
    raw = json.loads((ids25 / MANIFEST).read_text())
    for entry in raw["shards"]:
        entry["name"] = (names or {}).get(entry["name"], entry["name"])
    path = tmp_path / "index" / "m.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(raw))
    return path


def test_a_manifest_elsewhere_describes_local_shards(ids25, tmp_path):
    beside = resolve_shards(str(ids25))
    path = _elsewhere(ids25, tmp_path)
    (ids25 / MANIFEST).unlink()  # read-only shards: no manifest beside them
    spec = str(ids25) + "/ids-{000000..000002}.tar"
    got = resolve_shards(spec, str(path))
    assert [(s.path, s.count) for s in got.shards] == [(s.path, s.count) for s in beside.shards]
    assert got.total == 25
    # The folder with data.manifest: every shard the manifest lists, found in the folder.
    assert [s.path for s in resolve_shards(str(ids25), str(path)).shards] == [s.path for s in beside.shards]
    with pytest.raises(DataError, match="no manifest.json in .*distgan data index"):
        resolve_shards(spec)


def test_entries_match_by_exact_url_else_by_file_name(ids25, tmp_path):
    url = "http://127.0.0.1:1/d/ids-000001.tar"
    path = _elsewhere(ids25, tmp_path, {"ids-000000.tar": "pipe:cat /somewhere/ids-000000.tar",
                                        "ids-000001.tar": url})
    got = resolve_shards(f"pipe:cat /somewhere/ids-000000.tar::{url}?token=1::{ids25}/ids-000002.tar", str(path))
    assert [s.count for s in got.shards] == [10, 10, 5]  # exact; by file name (query dropped); by file name
    assert got.shards[1].path == url + "?token=1"  # remote URLs are not stat-ed
    # The manifest alone: every shard it lists, relative names below the manifest's folder.
    shutil.copy(ids25 / "ids-000002.tar", path.parent / "ids-000002.tar")
    alone = resolve_shards("", str(path))
    assert [s.path for s in alone.shards] == ["pipe:cat /somewhere/ids-000000.tar", url,
                                             str(path.parent / "ids-000002.tar")]


def test_bad_keys_reach_the_shards(ids25, tmp_path):
    raw = json.loads((ids25 / MANIFEST).read_text())
    raw["shards"][0]["bad_keys"] = ["000003"]
    raw["shards"][0]["count"] -= 1
    path = tmp_path / "m.json"
    path.write_text(json.dumps(raw))
    shard = resolve_shards(str(ids25 / "ids-000000.tar"), str(path)).shards[0]
    assert shard.bad_keys == frozenset({"000003"}) and shard.count == 9


def test_clear_errors(ids25, tmp_path):
    path = _elsewhere(ids25, tmp_path)
    with pytest.raises(DataError, match=r"http://h/x.tar is read remotely .*distgan data index .*data.manifest=M.json"):
        resolve_shards("http://h/x.tar")
    with pytest.raises(DataError, match=r"http://h/other.tar is not listed in data.manifest="):
        resolve_shards("http://h/other.tar", str(path))
    with pytest.raises(DataError, match=r"2 of 4 shard files missing: .*ids-000003.tar, .*x.tar"):
        resolve_shards(f"{ids25}/ids-{{000001..000003}}.tar::{ids25}/x.tar", str(path))
    with pytest.raises(DataError, match=r"data.shards='::' names no shards"):
        resolve_shards("::", str(path))
    with pytest.raises(DataError, match=r"the glob .* matches no files"):
        resolve_shards(str(ids25) + "/*.tgz")
    with pytest.raises(DataError, match=r"data.manifest=.*nothing.json.*no such file.*distgan data index"):
        resolve_shards(str(ids25), str(tmp_path / "nothing.json"))
    with pytest.raises(DataError, match="data.shards is empty"):
        resolve_shards("")


def test_older_manifests_still_load(ids25):
    raw = json.loads((ids25 / MANIFEST).read_text())
    for key in ("image_key", "image_key_b", "label_key", "label_encoding"):
        raw.pop(key)
    for entry in raw["shards"]:
        entry.pop("bad_keys")
    raw["version"] = 1
    (ids25 / MANIFEST).write_text(json.dumps(raw))
    man = Manifest.load(ids25)
    assert man.image_fields == ["png"] and man.shards[0].bad_keys == []


def test_config_checks(ids25, tmp_path):
    base = ["data.name=shards", "data.resolution=4"]
    cfg = load_config(None, base + [f"data.manifest={_elsewhere(ids25, tmp_path)}"])  # the manifest alone
    assert unreachable_files(cfg) == []
    cfg = load_config(None, base + ["data.shards=http://h/x-{0..3}.tar", f"data.manifest={tmp_path / 'no.json'}"])
    assert unreachable_files(cfg) == [f"data.manifest='{tmp_path / 'no.json'}': no such file"]  # URLs: not stat-ed
    with pytest.raises(ConfigError, match="needs data.shards .* or data.manifest"):
        load_config(None, base)
    with pytest.raises(ConfigError, match="data.label_key must be cls or json:FIELD"):
        load_config(None, base + ["data.shards=x.tar", "data.label_key=txt"])
    with pytest.raises(ConfigError, match="data.manifest applies to data.name=shards only"):
        load_config(None, ["data.manifest=m.json"])
