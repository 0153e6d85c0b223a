"""The WAL helper's settings as plain data, kept per configuration so a starting helper need not
import the config models.

Validating the configuration (opsdb.config: pydantic and the models) cost a starting helper ~150 ms of
CPU and ~20 MB of its memory, for the few values it uses: the repository, compression and encryption
options (ops/codec.RepositoryOptions), the cluster's name and `[wal] push_workers` / `prefetch`. After
one validation they are written as JSON beside the helper's socket (spool_dir/<cluster>/helper/, mode
0700 and this user's, as the socket), in `settings-DIGEST.json`. DIGEST covers everything they come
from: opsdb's version, the config file's real path and bytes, the cluster option and every OPSDB_*
variable; the file repeats the whole key, so another key with the same digest prefix never matches.
A changed config or environment misses and is validated again. An invalid configuration is never
written (only validated settings are, and only when the file did not change while it was read), so a
bad config is still reported the validated way. Nothing secret is kept: key file paths and the name
of `key_env`, never a key. Without a config file (settings from the environment only) nothing is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from typing import TYPE_CHECKING, Any

from opsdb.ops.common.codec import RepositoryOptions

if TYPE_CHECKING:
    from opsdb.config import Settings

FORMAT = 1
PREFIX = "settings-"
MAX_AGE = 7 * 24 * 3600  # entries of configs long since edited are dropped when a new one is written


@dataclasses.dataclass(frozen=True)
class WalSettings:
    """What the WAL helper uses of the validated settings."""

    cluster: str
    repository: RepositoryOptions
    push_workers: int
    prefetch: int

    @classmethod
    def of(cls, settings: Settings, cluster: str | None) -> WalSettings:
        name, _ = settings.cluster(cluster)
        wal = settings.wal
        return cls(name, RepositoryOptions.of(settings), wal.push_workers, wal.prefetch)

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["repository"]["storage"] = dict(self.repository.storage)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> WalSettings:
        repo = dict(doc["repository"])
        repo["read_key_files"] = tuple(repo["read_key_files"])
        return cls(doc["cluster"], RepositoryOptions(**repo), int(doc["push_workers"]), int(doc["prefetch"]))


def load(config: str | None, cluster: str | None, directory: str) -> WalSettings:
    """The validated settings of `config` for `cluster`: from `directory`'s entry when one matches,
    else validated (opsdb.config) and written there. Raises what load_settings raises."""
    content = _read(config)
    key, path = _entry(config, content, cluster, directory)
    cached = _cached(path, key) if key else None
    if cached is not None:
        return cached
    from opsdb.config import load_settings

    found = WalSettings.of(load_settings(config), cluster)
    if key and _read(config) == content:  # written only when the file did not change while validated
        _write(path, key, found)
    return found


def kept(config: str | None, cluster: str | None, directory: str) -> bool:
    """Whether `directory` holds the settings of `config` as it is now."""
    key, path = _entry(config, _read(config), cluster, directory)
    return bool(key) and _cached(path, key) is not None


def _entry(config: str | None, content: bytes | None, cluster: str | None, directory: str) -> tuple[str, str]:
    """(key, path) of the entry for this config content; key "" when nothing is kept (no config file)."""
    key = _key(config, content, cluster) if config is not None and content is not None else ""
    return key, os.path.join(directory, f"{PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:32]}.json")


def _read(config: str | None) -> bytes | None:
    if config is None:
        return None
    try:
        with open(config, "rb") as fh:
            return fh.read()
    except OSError:
        return None  # load_settings says why


def _key(config: str, content: bytes, cluster: str | None) -> str:
    from opsdb import __version__

    env = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("OPSDB_"))
    parts = [str(FORMAT), __version__, os.path.realpath(config), hashlib.sha256(content).hexdigest(), cluster or ""]
    return "\0".join(parts + env)


def _cached(path: str, key: str) -> WalSettings | None:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        if doc.get("key") != key:
            return None
        return WalSettings.from_json(doc["settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing, torn by a crash before its rename, or of another format: validated again


def _write(path: str, key: str, found: WalSettings) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"key": key, "settings": found.to_json()}, fh)
        os.replace(tmp, path)  # readers see the old entry or the whole new one
    except OSError:  # a full or read-only spool: the next start validates again
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return
    _drop_old(os.path.dirname(path))


def _drop_old(directory: str) -> None:
    now = time.time()
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(PREFIX) and now - entry.stat().st_mtime > MAX_AGE:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
