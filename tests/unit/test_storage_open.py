"""open_storage: URL → driver, and one-line UsageErrors for bad URLs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from opsdb.errors import UsageError
from opsdb.storage import LocalStorage, MemoryStorage, open_storage


def test_file_url(tmp_path) -> None:
    s = open_storage(f"file://{tmp_path}/repo/")
    assert isinstance(s, LocalStorage)
    assert s.root == f"{tmp_path}/repo"
    assert open_storage(f"file://localhost{tmp_path}").root == str(tmp_path)


def test_memory_url() -> None:
    a, b = open_storage("memory://"), open_storage("memory://")
    assert isinstance(a, MemoryStorage) and a is not b
    named = open_storage("memory://shared-test")
    named.put("k", [b"1"])
    assert open_storage("memory://shared-test/").open("k").read() == b"1"
    assert named.url == "memory://shared-test/"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "/var/lib/opsdb",
        "file://relative/path",
        "file:///",
        "file:relative",
        "gs://bucket/x",
        "s3:///no-bucket",
        "s3://Bad_Bucket/x",
        "file:///x?y=1",
    ],
)
def test_bad_urls_are_one_line_usage_errors(url: str) -> None:
    with pytest.raises(UsageError) as e:
        open_storage(url)
    assert "\n" not in str(e.value)
    assert e.value.exit_code == 2


def test_importing_storage_does_not_import_boto3() -> None:
    code = "import sys, opsdb.storage; open_storage = opsdb.storage.open_storage; open_storage('memory://'); print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
