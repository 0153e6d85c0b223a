"""file:// driver specifics: temp files, directory creation, durability bookkeeping, OS errors."""

from __future__ import annotations

import os
import stat

import pytest

from opsdb.errors import Conflict, RepositoryUnavailable
from opsdb.storage.local import LocalStorage


def test_root_is_created_on_first_write(tmp_path) -> None:
    root = tmp_path / "a" / "b" / "repo"
    s = LocalStorage(root)
    assert list(s.list("")) == []  # listing a missing root is empty, not an error
    assert not root.exists()
    s.put("x/y", [b"1"])
    assert (root / "x" / "y").read_bytes() == b"1"
    assert s.url == f"file://{root}"


def test_files_are_not_world_readable(tmp_path) -> None:
    s = LocalStorage(tmp_path)
    s.put("k", [b"secret"])
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) & 0o007 == 0


def test_temp_and_sidecar_files_are_invisible(tmp_path) -> None:
    s = LocalStorage(tmp_path)
    s.put("d/k", [b"1"], metadata={"a": "b"})
    (tmp_path / "d" / ".tmp-leftover-from-a-crash").write_bytes(b"partial")
    assert sorted(os.listdir(tmp_path / "d")) == [".meta-k", ".tmp-leftover-from-a-crash", "k"]
    assert [i.key for i in s.list("")] == ["d/k"]


def test_no_temp_file_left_after_failure(tmp_path) -> None:
    s = LocalStorage(tmp_path)

    def chunks():
        yield b"abc"
        raise OSError("source read failed")  # an OSError from the source is not a repository error

    with pytest.raises(OSError, match="source read failed"):
        s.put("d/k", chunks())
    assert os.listdir(tmp_path / "d") == []


def test_conflict_with_existing_directory_or_file_parent(tmp_path) -> None:
    s = LocalStorage(tmp_path)
    s.put("a/b", [b"1"])
    with pytest.raises(Conflict, match="directory"):
        s.put("a", [b"2"])
    with pytest.raises(Conflict, match="not a directory"):
        s.put("a/b/c", [b"3"])
    assert s.stat("a") is None


def test_delete_prunes_empty_directories_but_not_root(tmp_path) -> None:
    s = LocalStorage(tmp_path / "repo")
    s.put("backups/1/base.tar", [b"1"])
    s.put("backups/2/base.tar", [b"2"])
    s.delete(["backups/1/base.tar"])
    assert sorted(os.listdir(tmp_path / "repo" / "backups")) == ["2"]
    s.delete(["backups/2/base.tar"])
    assert os.listdir(tmp_path / "repo") == []


def test_os_error_is_repository_unavailable_naming_path_and_action() -> None:
    s = LocalStorage("/sys/opsdb-test-repo")  # mkdir under sysfs fails even for root
    with pytest.raises(RepositoryUnavailable, match=r"unable to put file:///sys/opsdb-test-repo/k: .*not permitted"):
        s.put("k", [b"1"])


def test_create_only_uses_hard_link_so_replacement_is_impossible(tmp_path) -> None:
    s = LocalStorage(tmp_path)
    s.put("k", [b"first"], if_absent=True)
    assert os.stat(tmp_path / "k").st_nlink == 1  # the temp name was removed after linking
    with pytest.raises(Conflict):
        s.put("k", [b"second"], if_absent=True)
    assert (tmp_path / "k").read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["k"]


def test_concurrent_put_delete_and_list_in_one_directory(tmp_path) -> None:
    """delete prunes directories it empties; a put or list racing with it must not fail."""
    import threading

    s = LocalStorage(tmp_path)
    errors: list[BaseException] = []

    def churn(name: str) -> None:
        try:
            for _ in range(150):
                s.put(f"b/x/{name}", [b"1"])
                s.delete([f"b/x/{name}"])
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    def lister() -> None:
        try:
            for _ in range(150):
                list(s.list("b/"))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(n,)) for n in ("p", "q")] + [threading.Thread(target=lister)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert list(s.list("")) == []


@pytest.mark.root("handing files to another account needs root")
def test_owner_gets_every_new_file_and_directory_but_nothing_that_existed(tmp_path) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    (tmp_path / "repo" / "old").mkdir(parents=True)
    s = LocalStorage(tmp_path / "repo" / "deeper", owner=(nobody.pw_uid, nobody.pw_gid))
    s.put("a/b/obj", [b"1"], metadata={"k": "v"})
    s.put("old-style", [b"2"], if_absent=True)
    made = [tmp_path / "repo" / "deeper", *(tmp_path / "repo" / "deeper").rglob("*")]
    assert {(p.stat().st_uid, p.stat().st_gid) for p in made} == {(nobody.pw_uid, nobody.pw_gid)}
    assert {p.name for p in made} >= {"deeper", "a", "b", "obj", ".meta-obj", "old-style"}
    assert (tmp_path / "repo").stat().st_uid == 0 and (tmp_path / "repo" / "old").stat().st_uid == 0
