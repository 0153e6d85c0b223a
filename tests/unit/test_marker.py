"""repo/marker.py: the repository and cluster markers, against MemoryStorage and LocalStorage."""

import json

import pytest

from opsdb.errors import IntegrityError, OperationFailed, RepositoryUnavailable
from opsdb.repo import layout, marker
from opsdb.storage.local import LocalStorage
from opsdb.storage.memory import MemoryStorage


def test_repository_marker_is_written_once_and_newer_formats_are_refused() -> None:
    storage = MemoryStorage()
    first = marker.ensure_repository_marker(storage, "2026-11-21T10:15:00.000Z")
    again = marker.ensure_repository_marker(storage, "2027-01-01T00:00:00.000Z")
    assert first == again and first.created == "2026-11-21T10:15:00.000Z"
    assert json.loads(storage.open(layout.REPO_MARKER).read())["format"] == layout.FORMAT_VERSION
    storage.delete([layout.REPO_MARKER])
    storage.put(layout.REPO_MARKER, [b'{"format": 99}'])
    with pytest.raises(OperationFailed, match="format 99"):
        marker.ensure_repository_marker(storage)


def test_capabilities_merge_and_unknown_fields_survive_a_rewrite() -> None:
    storage = MemoryStorage()
    storage.put(layout.REPO_MARKER, [b'{"format": 1, "created": "t", "created_by": "opsdb 9", "future": [1]}'])
    updated = marker.update_capabilities(storage, {"conditional_writes": True})
    updated = marker.update_capabilities(storage, {"probed": "2026-12-05T03:00:00Z"})
    doc = json.loads(storage.open(layout.REPO_MARKER).read())
    assert doc["capabilities"] == {"conditional_writes": True, "probed": "2026-12-05T03:00:00Z"}
    assert doc["future"] == [1] and doc["created"] == "t"
    assert marker.read_repository_marker(storage) == updated


def test_cluster_marker_pins_one_system_identifier() -> None:
    storage = MemoryStorage()
    created = marker.ensure_cluster_marker(storage, "main", 7001, what="archive X")
    assert created.system_identifier == "7001" and storage.stat(layout.REPO_MARKER) is not None
    assert marker.ensure_cluster_marker(storage, "main", "7001", what="archive X") == created
    with pytest.raises(marker.IdentityMismatch) as refused:
        marker.ensure_cluster_marker(storage, "main", 7002, what="archive 000000010000000000000005")
    text = str(refused.value)
    assert "7002" in text and "7001" in text and "archive 000000010000000000000005" in text
    assert "opsdb reinit" in (refused.value.hint or "")
    assert marker.read_cluster_marker(storage, "other") is None


def test_reinit_moves_the_cluster_and_remembers_the_old_identity() -> None:
    storage = MemoryStorage()
    marker.ensure_cluster_marker(storage, "main", 7001, what="x")
    before, after = marker.reinit_cluster(storage, "main", 7002)
    assert before is not None and before.system_identifier == "7001"
    assert after.system_identifier == "7002" and after.previous[0]["system_identifier"] == "7001"
    assert marker.read_cluster_marker(storage, "main") == after
    marker.ensure_cluster_marker(storage, "main", 7002, what="x")
    with pytest.raises(marker.IdentityMismatch, match="retired by `opsdb reinit`"):
        marker.ensure_cluster_marker(storage, "main", 7001, what="x")


def test_a_marker_of_another_cluster_or_garbage_is_an_integrity_error() -> None:
    storage = MemoryStorage()
    storage.put(layout.cluster_marker("main"), [b'{"cluster": "other", "system_identifier": "1"}'])
    with pytest.raises(IntegrityError, match="marker of cluster 'other'"):
        marker.read_cluster_marker(storage, "main")
    storage.put(layout.cluster_marker("b"), [b"not json"])
    with pytest.raises(IntegrityError, match="not valid JSON"):
        marker.prove_archive(storage, "b")


def test_proof_names_what_is_missing(tmp_path) -> None:
    missing = LocalStorage(str(tmp_path / "nowhere"))
    with pytest.raises(marker.RepositoryMissing, match="no opsdb repository at .*nowhere"):
        marker.prove_archive(missing, "main")
    (tmp_path / "empty").mkdir()
    with pytest.raises(marker.RepositoryMissing, match="mistyped path or prefix"):
        marker.prove_archive(LocalStorage(str(tmp_path / "empty")), "main")
    storage = LocalStorage(str(tmp_path / "repo"))
    marker.ensure_cluster_marker(storage, "main", 42, what="x")
    assert marker.prove_archive(storage, "main").system_identifier == 42
    with pytest.raises(marker.RepositoryMissing, match="has no cluster 'mian'"):
        marker.prove_archive(storage, "mian")
    assert issubclass(marker.RepositoryMissing, RepositoryUnavailable)


def test_a_repository_written_before_markers_is_proven_by_its_objects() -> None:
    storage = MemoryStorage()
    storage.put(layout.wal_object("main", "000000010000000000000001"), [b"x"])
    proof = marker.prove_archive(storage, "main")
    assert proof.marker is None and proof.system_identifier is None and "before cluster markers" in proof.how


class _Server:
    """A connection double: the one query reinit makes."""

    def __init__(self, sysid: int) -> None:
        self.sysid = sysid

    def __enter__(self) -> "_Server":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def system_identifier(self) -> int:
        return self.sysid


def test_reinit_needs_yes_to_move_an_existing_cluster() -> None:
    from opsdb.errors import UsageError
    from opsdb.ops.repository.reinit import reinit

    storage = MemoryStorage()
    first = reinit(storage, "main", "host=x", confirm=False, connect=lambda _c: _Server(11))
    assert (first.before, first.after, first.changed) == (None, "11", True)
    assert not reinit(storage, "main", "host=x", confirm=False, connect=lambda _c: _Server(11)).changed
    with pytest.raises(UsageError, match="from system identifier 11 to 22"):
        reinit(storage, "main", "host=x", confirm=False, connect=lambda _c: _Server(22))
    assert marker.read_cluster_marker(storage, "main").system_identifier == "11"
    moved = reinit(storage, "main", "host=x", confirm=True, connect=lambda _c: _Server(22))
    assert (moved.before, moved.after) == ("11", "22")
