"""What the root callback knows: global options, and the config parsed once on first use."""

from __future__ import annotations

import dataclasses
import functools

from opsdb.config import ClusterConfig, Settings, load_settings


@dataclasses.dataclass
class AppState:
    config_path: str | None
    cluster_name: str | None
    json: bool
    debug: bool
    log_format: str | None = None
    log_level: str = "info"

    @functools.cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    def cluster(self) -> tuple[str, ClusterConfig]:
        return self.settings.cluster(self.cluster_name)
