"""What the repository's store honours, recorded in the repository marker (capabilities.conditional_writes).

The S3 driver guards create-only writes unless it knows that the store refuses a second one itself
(storage/createonly.py, docs/storage.md). That is probed once, at the first create-only write to the
repository, and kept in opsdb-repository.json, so later writers read it with the marker instead of
probing again. `opsdb check` probes every time and replaces a record that no longer holds.
"""

from __future__ import annotations

import dataclasses

from opsdb.errors import IntegrityError
from opsdb.repo import marker
from opsdb.storage.base import Storage
from opsdb.storage.createonly import CreateOnlyProbe, probe_create_only

CAPABILITY = "conditional_writes"


def recorded(storage: Storage) -> CreateOnlyProbe | None:
    """The probe result the repository marker holds; None without a marker or without a record."""
    return _record_of(marker.read_repository_marker(storage))


def _record_of(found: marker.RepositoryMarker | None) -> CreateOnlyProbe | None:
    doc = found.capabilities.get(CAPABILITY) if found else None
    try:
        return CreateOnlyProbe.from_dict(doc) if isinstance(doc, dict) else None
    except IntegrityError:  # a record this opsdb cannot read: not known, so guarded (and re-probed)
        return None


def probe_and_record(storage: Storage) -> CreateOnlyProbe:
    """Probe the store and record the result in the repository marker (created when absent)."""
    found = probe_create_only(storage, probed_at=marker.now_text())
    marker.update_capabilities(storage, {CAPABILITY: found.to_dict()})
    return found


def adopt_create_only(storage: Storage) -> None:
    """For a storage that guards create-only writes (S3): at its first create-only write, take the
    marker's record, or probe and record it (the first write to the repository). Others: nothing."""
    if hasattr(storage, "create_only_loader"):
        storage.create_only_loader = lambda: recorded(storage) or probe_and_record(storage)


@dataclasses.dataclass(frozen=True)
class Reprobe:
    """`opsdb check`'s probe: what the store does now, and what the marker said before."""

    probe: CreateOnlyProbe
    before: CreateOnlyProbe | None
    recorded: bool  # the marker now holds `probe`

    @property
    def changed(self) -> bool:
        """The marker recorded something else than the store does now."""
        return self.before is not None and _outcomes(self.before) != _outcomes(self.probe)


def reprobe(storage: Storage) -> Reprobe:
    """Probe again. A record that no longer holds is replaced, so writers stop trusting a store that
    changed; a repository without a marker is not created here (its first write records the probe)."""
    current = marker.read_repository_marker(storage)
    before = _record_of(current)
    probe = probe_create_only(storage, probed_at=marker.now_text())
    update = current is not None and (before is None or _outcomes(before) != _outcomes(probe))
    if update:
        marker.update_capabilities(storage, {CAPABILITY: probe.to_dict()})
    return Reprobe(probe, before, update)


def _outcomes(probe: CreateOnlyProbe) -> tuple[str, str]:
    return probe.put, probe.multipart
