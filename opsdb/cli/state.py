"""What the root callback knows: global options, and the config parsed once on first use."""

from __future__ import annotations

import dataclasses
import functools
import os

from opsdb.config import SEARCH_PATHS, ClusterConfig, Settings, load_settings
from opsdb.errors import UsageError


@dataclasses.dataclass
class AppState:
    config_path: str | None
    cluster_name: str | None
    json: bool
    debug: bool
    log_format: str | None = None
    log_level: str = "info"
    log_file: str | None = None

    @functools.cached_property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    def cluster(self) -> tuple[str, ClusterConfig]:
        settings = self.settings
        if settings.config_path is None and not settings.clusters:
            raise no_config_file()
        return settings.cluster(self.cluster_name)


def no_config_file() -> UsageError:
    """No file was found and the embedded default names no cluster: say where opsdb looked."""
    looked = ["--config (not given)", "$OPSDB_CONFIG (not set)"]
    looked += [str(p if p.is_absolute() else os.path.join(os.getcwd(), p)) for p in SEARCH_PATHS]
    return UsageError(
        f"no config file found (looked at: {', '.join(looked)}), and the built-in default has no cluster",
        hint="pass --config PATH or create /etc/opsdb/opsdb.toml (config/opsdb.example.toml documents every key)",
    )
