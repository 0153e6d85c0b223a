"""Where a wal-push / wal-fetch call's work runs: the few config keys read before any validation.

PostgreSQL starts one process per WAL file, so what this module imports is paid per segment: the
standard library only, and not even tomllib on the common path. Parsing the config with tomllib costs
about 8 ms here (it compiles its regular expressions at import), a third of a lean call; so the keys
read here are cached per config file in a private directory (`$XDG_RUNTIME_DIR/opsdb-UID` or
`/tmp/opsdb-UID`, mode 0700, used only when this user owns it). The cache entry is named and checked by
everything the keys come from: the config file's real path and content (length and CRC-32 of the bytes,
read on every call) and every OPSDB_* environment variable, so an edited config or a changed environment
is parsed again, never served stale. Nothing secret is cached (spool directory, cluster name, the async switch,
the cluster's os_user). Routing never replaces validation: the real work always runs with the fully
validated settings, in the WAL helper or in-process.
"""

from __future__ import annotations

import os
import stat
import zlib

DEFAULT_SPOOL = "/var/spool/opsdb"
CACHE_VERSION = 3
CACHE_MAGIC = f"opsdb-routing {CACHE_VERSION}"
CACHE_MAX_AGE = 7 * 24 * 3600  # entries of configs long since edited are dropped when a new one is written
_FIELDS = ("config_path", "async_", "spool_dir", "cluster", "os_user")


class Routing:
    """[wal] async and spool_dir, the cluster name and its os_user, read without pydantic (the helper
    reads everything else, `[wal] prefetch` included, from the validated settings)."""

    def __init__(self, **fields: object) -> None:
        self.config_path: str | None = None
        self.async_ = False
        self.spool_dir = DEFAULT_SPOOL
        self.cluster: str | None = None
        self.os_user = "postgres"
        for name, value in fields.items():
            setattr(self, name, value)

    def helpers_of_another_user(self) -> bool:
        """Whether this caller is root while the cluster's helpers and spool belong to its os_user.

        Then the call is served in-process, exactly as with no helper: root must neither use the server
        user's helpers (they would open root's paths with the server user's rights) nor create helpers,
        sockets or spool files of its own there (the server's archive_command could not use them)."""
        if os.geteuid() != 0:
            return False
        import pwd

        try:
            return pwd.getpwnam(self.os_user).pw_uid != 0
        except KeyError:  # no such user here (the server runs elsewhere): nothing of its to keep apart
            return False

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in _FIELDS}


def find_config(explicit: str | None) -> str | None:
    """The SPEC's discovery order (config.find_config_file does the same with full error messages)."""
    for candidate in (explicit, os.environ.get("OPSDB_CONFIG") or None):
        if candidate:
            return candidate
    for candidate in ("opsdb.toml", "/etc/opsdb/opsdb.toml"):
        if os.path.isfile(candidate):
            return candidate
    return None


def read_routing(config: str | None, cluster: str | None) -> Routing | None:
    """The routing keys, from the cache when it matches; None: anything unusual (the validated path
    reports it properly)."""
    path = find_config(config)
    content = b""
    if path is not None:
        try:
            with open(path, "rb") as fh:
                content = fh.read()
        except OSError:
            return None  # the validated path says why
    key = _cache_key(path, content, cluster)
    cached = _cache_read(key)
    if cached is not None:
        return cached
    try:
        found = _parse(path, content, cluster)
    except (ValueError, TypeError, UnicodeDecodeError):  # tomllib.TOMLDecodeError is a ValueError
        return None
    if not found.cluster:
        return None
    _cache_write(key, found)
    return found


def _parse(path: str | None, content: bytes, cluster: str | None) -> Routing:
    data: dict[str, object] = {}
    if path is not None:
        import tomllib  # only on a cache miss

        data = tomllib.loads(content.decode())
    wal = data.get("wal", {})
    wal = wal if isinstance(wal, dict) else {}
    env = os.environ.get
    name = cluster or _only_cluster(data)
    return Routing(
        config_path=os.path.realpath(path) if path is not None else None,
        async_=boolean(env("OPSDB_WAL__ASYNC", wal.get("async", False))),
        spool_dir=str(env("OPSDB_WAL__SPOOL_DIR", wal.get("spool_dir", DEFAULT_SPOOL))),
        cluster=name,
        os_user=str(env(f"OPSDB_CLUSTERS__{(name or '').upper()}__OS_USER", _os_user(data, name))),
    )


def _os_user(data: dict[str, object], cluster: str | None) -> str:
    clusters = data.get("clusters", {})
    section = clusters.get(cluster or "", {}) if isinstance(clusters, dict) else {}
    value = section.get("os_user", "postgres") if isinstance(section, dict) else "postgres"
    return str(value)


def boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _only_cluster(data: dict[str, object]) -> str | None:
    if any(k.startswith("OPSDB_CLUSTERS__") for k in os.environ):
        return None  # clusters from the environment: let the validated settings decide
    clusters = data.get("clusters", {})
    if isinstance(clusters, dict) and len(clusters) == 1:
        return str(next(iter(clusters)))
    return None


# --- the cache ------------------------------------------------------------------------------------


def cache_dir() -> str | None:
    """This user's private cache directory, made 0700 when missing; None when it is not safely ours."""
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    path = os.path.join(base, f"opsdb-{os.geteuid()}")
    try:
        st = os.lstat(path)  # one stat per WAL file; mkdir only the first time
    except FileNotFoundError:
        try:
            os.mkdir(path, 0o700)
            st = os.lstat(path)
        except OSError:
            return None
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None  # a symlink, someone else's, or readable by others: never trusted
    return path


def _cache_key(path: str | None, content: bytes, cluster: str | None) -> str:
    """Everything the keys come from: the config's real path and content (its length and CRC-32, read
    each call: a config is small), the cluster option and the OPSDB_* environment."""
    parts: list[str] = [str(CACHE_VERSION), cluster or ""]
    if path is not None:
        parts += [os.path.realpath(path), f"{len(content)}:{zlib.crc32(content):08x}"]
    parts += sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("OPSDB_"))
    return "\0".join(parts)


def _cache_file(key: str) -> str | None:
    directory = cache_dir()
    if directory is None:
        return None
    return os.path.join(directory, f"routing-{zlib.crc32(key.encode()):08x}")


def _cache_read(key: str) -> Routing | None:
    path = _cache_file(key)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except (OSError, ValueError):
        return None
    if len(lines) != 2 + len(_FIELDS) or lines[0] != CACHE_MAGIC or lines[1] != key:
        return None  # another key with the same crc, or another format
    fields: dict[str, object] = {}
    for line in lines[2:]:
        name, _, value = line.partition("=")
        if name not in _FIELDS or len(value) < 2:
            return None
        try:
            fields[name] = _decode(value)
        except ValueError:
            return None
    return Routing(**fields)


def _cache_write(key: str, found: Routing) -> None:
    path = _cache_file(key)
    if path is None:
        return
    lines = [CACHE_MAGIC, key] + [f"{name}={_encode(value)}" for name, value in found.as_dict().items()]
    if any("\n" in line for line in lines):
        return  # a value this plain format cannot hold: such a config is simply parsed every time
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines))
        os.replace(tmp, path)  # readers see the old entry or the whole new one
    except OSError:
        _unlink(tmp)
        return
    _drop_old(os.path.dirname(path))


def _encode(value: object) -> str:
    # a plain typed format rather than JSON: importing json costs ~3 ms per WAL file
    if value is None:
        return "n:"
    if isinstance(value, bool):
        return f"b:{int(value)}"
    if isinstance(value, int):
        return f"i:{value}"
    return f"s:{value}"


def _decode(text: str) -> object:
    kind, value = text[:2], text[2:]
    if kind == "n:":
        return None
    if kind == "b:":
        return value == "1"
    if kind == "i:":
        return int(value)
    return value


def _drop_old(directory: str) -> None:
    import time

    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.startswith("routing-") and now - entry.stat().st_mtime > CACHE_MAX_AGE:
                os.unlink(entry.path)
        except OSError:
            continue


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
