"""file:// driver: a directory tree on a local or mounted filesystem (the embedded default).

A put writes a temp file ('.tmp-*') in the destination directory, fsyncs it, then publishes it
with rename (or, for if_absent, a hard link, which fails if the name exists, so an existing object
is never replaced), then fsyncs the directory. Readers therefore see the old object or the whole
new one, never a partial file. User metadata lives in a '.meta-<name>' JSON sidecar next to the
object; list() skips both kinds of bookkeeping file.

With an `owner` (uid, gid), every file and directory this driver creates is handed to that account
as it is created (used when opsdb runs as root: the cluster's os_user keeps archiving into the same
tree, see docs/postgres.md "One privilege model"). Existing entries are never re-owned.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat as stat_mod
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from opsdb.storage.base import (
    RESERVED_PREFIXES,
    Conflict,
    NotFound,
    ObjectInfo,
    RepositoryUnavailable,
    check_key,
    check_metadata,
    check_prefix,
    object_url,
)

FILE_MODE = 0o640  # backups may hold unencrypted data: not world-readable
DIR_MODE = 0o750
_WRITE_BUFFER = 1024 * 1024
# Hard links are unsupported on some network/FUSE filesystems; then create-only falls back to O_EXCL.
_NO_LINK_ERRNOS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK}


class LocalStorage:
    features = frozenset({"fsync", "conditional_put"})

    def __init__(self, root: str | os.PathLike[str], *, owner: tuple[int, int] | None = None) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.url = "file://" + self.root
        self.owner = owner

    # --- writing ------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        if_absent: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        path = self._path(key)
        directory, name = os.path.split(path)
        if if_absent and os.path.lexists(path):
            raise self._conflict(key)
        tmp: str | None
        tmp, fd = self._create_temp(directory, key)
        meta_tmp: str | None = None
        try:
            size = self._write_file(fd, chunks)
            if meta:
                meta_tmp, meta_fd = self._create_temp(directory, key)
                self._write_file(meta_fd, [json.dumps(meta, sort_keys=True).encode()])
            meta_path = os.path.join(directory, ".meta-" + name)
            if if_absent:
                self._publish_create_only(tmp, path, key)
                tmp = None
            if meta_tmp is not None:
                os.replace(meta_tmp, meta_path)
                meta_tmp = None
            else:
                _unlink_quietly(meta_path)  # a stale sidecar of a replaced object
            if tmp is not None:
                os.replace(tmp, path)
                tmp = None
            _fsync_dir(directory)
            st = os.stat(path)
        except _SourceFailed as e:
            raise e.error from None
        except IsADirectoryError as e:
            raise Conflict(f"unable to put {self._where(key)}: a directory of that name exists") from e
        except NotADirectoryError as e:
            raise self._parent_is_object(key) from e
        except OSError as e:
            raise self._unavailable("put", key, e) from e
        finally:
            for leftover in (tmp, meta_tmp):
                if leftover is not None:
                    _unlink_quietly(leftover)
        return ObjectInfo(key=key, size=size, mtime=st.st_mtime, metadata=meta)

    def _parent_is_object(self, key: str) -> Conflict:
        return Conflict(f"unable to put {self._where(key)}: a parent of the key is an object, not a directory")

    def _create_temp(self, directory: str, key: str) -> tuple[str, int]:
        """Create a new temp file in directory (creating the directory); return its path and fd."""
        attempts = 10
        for attempt in range(attempts):
            tmp = os.path.join(directory, f".tmp-{secrets.token_hex(8)}")
            try:
                self._makedirs(directory)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
                try:
                    if self.owner is not None:
                        os.fchown(fd, *self.owner)  # before any byte: the object is the owner's from the start
                except OSError:
                    os.close(fd)
                    _unlink_quietly(tmp)
                    raise
                return tmp, fd
            except FileNotFoundError as e:
                # A concurrent delete pruned a directory we just made (it was empty): make it again.
                if attempt == attempts - 1:
                    raise self._unavailable("put", key, e) from e
            except NotADirectoryError as e:
                raise self._parent_is_object(key) from e
            except OSError as e:
                raise self._unavailable("put", key, e) from e
        raise AssertionError("unreachable")

    def _write_file(self, fd: int, chunks: Iterable[bytes]) -> int:
        """Write chunks to the open temp file and fsync it. An exception from chunks propagates unchanged."""
        size = 0
        with open(fd, "wb", buffering=_WRITE_BUFFER) as f:
            it = iter(chunks)
            while True:
                try:
                    chunk = next(it)
                except StopIteration:
                    break
                except Exception as e:
                    raise _SourceFailed(e) from e
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        return size

    def _publish_create_only(self, tmp: str, path: str, key: str) -> None:
        try:
            os.link(tmp, path)
        except FileExistsError as e:
            raise self._conflict(key) from e
        except OSError as e:
            if e.errno not in _NO_LINK_ERRNOS:
                raise
            # Fallback: claim the name with O_EXCL, then move the data over it. An empty file is
            # visible under the name for an instant, but an existing object is still never replaced.
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            except FileExistsError as e2:
                raise self._conflict(key) from e2
            os.replace(tmp, path)
            return
        os.unlink(tmp)

    def _makedirs(self, directory: str) -> None:
        """Create missing directories (the root too, on first write), fsyncing each new entry's parent."""
        missing = []
        d = directory
        while not os.path.isdir(d):
            missing.append(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        for d in reversed(missing):
            for _ in range(10):
                try:
                    os.mkdir(d, DIR_MODE)
                    if self.owner is not None:
                        os.chown(d, *self.owner)
                except FileExistsError:
                    if os.path.isdir(d):
                        break
                    if os.path.lexists(d) and not os.path.isdir(d):
                        raise NotADirectoryError(errno.ENOTDIR, "not a directory", d) from None
                    continue  # a concurrent delete pruned it between mkdir and the check: again
                break
            _fsync_dir(os.path.dirname(d))

    def delete(self, keys: Iterable[str]) -> None:
        touched: set[str] = set()
        for key in [check_key(k) for k in keys]:
            path = self._path(key)
            directory, name = os.path.split(path)
            try:
                removed = _unlink_quietly(path)
                removed |= _unlink_quietly(os.path.join(directory, ".meta-" + name))
            except IsADirectoryError:
                continue  # a directory is not an object: nothing to delete
            except OSError as e:
                raise self._unavailable("delete", key, e) from e
            if removed:
                touched.add(directory)
        for directory in touched:
            try:
                _fsync_dir(directory)
            except FileNotFoundError:
                continue  # already pruned by a concurrent delete
            except OSError as e:
                raise self._unavailable("delete", os.path.relpath(directory, self.root), e) from e
            self._prune_empty_dirs(directory)

    def _prune_empty_dirs(self, directory: str) -> None:
        # Keeps the tree from filling with empty backup directories; rmdir fails harmlessly if a
        # concurrent put just created a file there.
        while directory != self.root and directory.startswith(self.root + os.sep):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)

    # --- reading ------------------------------------------------------------------------------

    def open(self, key: str) -> BinaryIO:
        check_key(key)
        try:
            return open(self._path(key), "rb")  # the caller owns and closes it
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
            raise NotFound(f"unable to open {self._where(key)}: no such object") from e
        except OSError as e:
            raise self._unavailable("open", key, e) from e

    def stat(self, key: str) -> ObjectInfo | None:
        check_key(key)
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise self._unavailable("stat", key, e) from e
        if not stat_mod.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime, metadata=self._read_meta(path, key))

    def _read_meta(self, path: str, key: str) -> dict[str, str]:
        directory, name = os.path.split(path)
        try:
            with open(os.path.join(directory, ".meta-" + name), "rb") as f:
                doc = json.loads(f.read())
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise self._unavailable("stat", key, e) from e
        except ValueError as e:
            raise RepositoryUnavailable(f"unable to stat {self._where(key)}: unreadable metadata sidecar: {e}") from e
        return {str(k): str(v) for k, v in doc.items()}

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        start = os.path.join(self.root, prefix.rpartition("/")[0])
        if not os.path.isdir(start):
            return iter(())

        def fail(e: OSError) -> None:
            if not isinstance(e, FileNotFoundError):  # a directory pruned by a concurrent delete is fine
                raise self._unavailable("list", prefix or "/", e)

        found = []
        for directory, _dirs, files in os.walk(start, onerror=fail):
            rel = os.path.relpath(directory, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in files:
                key = rel + name
                if name.startswith(RESERVED_PREFIXES) or not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(directory, name))
                except FileNotFoundError:
                    continue  # deleted while listing
                except OSError as e:
                    raise self._unavailable("list", key, e) from e
                if stat_mod.S_ISREG(st.st_mode):
                    found.append(ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime))
        found.sort(key=lambda info: info.key)
        return iter(found)

    # --- helpers ------------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _where(self, key: str) -> str:
        return object_url(self.url, key)

    def _conflict(self, key: str) -> Conflict:
        return Conflict(f"unable to put {self._where(key)}: object already exists")

    def _unavailable(self, doing: str, key: str, e: OSError) -> RepositoryUnavailable:
        reason = e.strerror or str(e)
        if e.filename:
            reason += f" ({e.filename})"
        return RepositoryUnavailable(f"unable to {doing} {self._where(key)}: {reason}")


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> bool:
    """Remove path; True if it existed. Missing files (or a missing parent) are not an error."""
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


class _SourceFailed(Exception):
    """Carries an exception raised by the caller's chunk iterator past the OSError mapping."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error
