"""open_storage: URL → driver, one-line UsageErrors for bad URLs, and the AWS SDK loaded only for s3://."""

from __future__ import annotations

import os
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
    named = open_storage("memory://named")
    named.put("k", [b"1"])
    assert named.url == "memory://named/"
    assert list(open_storage("memory://named/").list("")) == []  # a name does not share a store


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


def _aws_modules_after_opening(url: str) -> list[str]:
    """Open `url` in a fresh interpreter; the AWS SDK modules it then has loaded."""
    code = (
        "import sys; from opsdb.storage import open_storage; "
        f"open_storage({url!r}); print(' '.join(m for m in ('boto3', 'botocore') if m in sys.modules))"
    )
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize("url", ["file://{tmp}/repo", "memory://"])
def test_opening_a_file_or_memory_repository_imports_neither_boto3_nor_botocore(tmp_path, url: str) -> None:
    assert _aws_modules_after_opening(url.format(tmp=tmp_path)) == []


def test_opening_an_s3_repository_does_import_them() -> None:
    """The check above can fail: the same child interpreter sees the SDK once an s3:// URL is opened."""
    assert "botocore" in _aws_modules_after_opening("s3://bucket/prefix")  # the driver uses botocore directly
