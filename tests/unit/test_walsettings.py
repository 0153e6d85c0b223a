"""The WAL helper's validated settings kept as plain data (ops/wal/settings.py): a starting helper with
an entry for its very config imports no config models; anything changed is validated again; nothing
invalid is ever kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opsdb.errors import ConfigError
from opsdb.ops.wal import settings as walsettings

CONFIG = """[repository]
url = "file://{where}/repo"
[encryption]
key_file = "{where}/key"
read_key_files = ["{where}/old.key"]
required = true
[compression]
level = {level}
[clusters.main]
conninfo = "host=127.0.0.1"
[wal]
push_workers = 3
prefetch = 5
"""


def _config(tmp_path: Path, level: int = 1) -> Path:
    path = tmp_path / "opsdb.toml"
    path.write_text(CONFIG.format(where=tmp_path, level=level))
    (tmp_path / "helper").mkdir(exist_ok=True)
    return path


def _entries(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "helper").glob("settings-*.json"))


def test_the_kept_settings_are_the_validated_ones_and_a_helper_start_reads_them_without_the_models(tmp_path):
    config = _config(tmp_path)
    first = walsettings.load(str(config), None, str(tmp_path / "helper"))
    assert (first.cluster, first.push_workers, first.prefetch) == ("main", 3, 5)
    assert first.repository.url == f"file://{tmp_path}/repo" and first.repository.level == 1
    assert first.repository.key_files() == [f"{tmp_path}/key", f"{tmp_path}/old.key"]
    assert len(_entries(tmp_path)) == 1 and _entries(tmp_path)[0].stat().st_mode & 0o077 == 0
    code = (
        "import sys; from opsdb.ops.wal import settings as walsettings; "
        f"s = walsettings.load({str(config)!r}, None, {str(tmp_path / 'helper')!r}); "
        "print(s == walsettings.WalSettings.from_json(s.to_json()), 'pydantic' in sys.modules, s.repository.level)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "False", "1"]


def test_an_edited_config_or_another_environment_is_validated_again(tmp_path, monkeypatch):
    config = _config(tmp_path)
    walsettings.load(str(config), None, str(tmp_path / "helper"))
    _config(tmp_path, level=7)
    assert walsettings.load(str(config), None, str(tmp_path / "helper")).repository.level == 7
    monkeypatch.setenv("OPSDB_COMPRESSION__LEVEL", "9")
    assert walsettings.load(str(config), None, str(tmp_path / "helper")).repository.level == 9
    assert len(_entries(tmp_path)) == 3


def test_an_invalid_config_is_never_kept(tmp_path):
    config = _config(tmp_path)
    config.write_text(config.read_text().replace("level = 1", "level = 99"))
    with pytest.raises(ConfigError, match="level"):
        walsettings.load(str(config), None, str(tmp_path / "helper"))
    assert _entries(tmp_path) == []


def test_an_entry_of_another_key_or_a_torn_one_is_not_used(tmp_path):
    config = _config(tmp_path)
    walsettings.load(str(config), None, str(tmp_path / "helper"))
    entry = _entries(tmp_path)[0]
    doc = entry.read_text()
    entry.write_text(doc.replace('"level": 1', '"level": 4').replace('"key": "', '"key": "x'))
    assert walsettings.load(str(config), None, str(tmp_path / "helper")).repository.level == 1
    entry.write_text(doc[: len(doc) // 2])
    assert walsettings.load(str(config), None, str(tmp_path / "helper")).repository.level == 1
    assert os.path.exists(entry) and entry.read_text() == doc  # written again, whole
