"""Configuration: one TOML file plus OPSDB_ environment overrides, validated once at the CLI.

Discovery order (SPEC): --config PATH, $OPSDB_CONFIG, ./opsdb.toml, /etc/opsdb/opsdb.toml; with no
file at all the embedded default applies (a local file:// repository, no clusters).
Environment overrides use the prefix OPSDB_ and "__" between levels:
OPSDB_REPOSITORY__URL=s3://b/p, OPSDB_CLUSTERS__MAIN__CONNINFO="host=...". pydantic-settings reads
them; it is imported only when such a variable is set, because importing it costs ~130 ms (it loads
asyncio, argparse and pydantic.dataclasses), 4 % of a 1.5 GB backup's wall time on 2 cores.
Every error becomes one ConfigError line naming the key and the problem.
"""

from __future__ import annotations

import functools
import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opsdb.errors import ConfigError, UsageError
from opsdb.model.units import parse_duration, parse_size

DEFAULT_REPOSITORY_URL = "file:///var/lib/opsdb/repo"
SEARCH_PATHS = (Path("opsdb.toml"), Path("/etc/opsdb/opsdb.toml"))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {value!r} (use an IANA name such as 'Europe/Berlin')") from exc
    return value


class RepositoryConfig(_Section):
    url: str = DEFAULT_REPOSITORY_URL
    endpoint_url: str | None = None
    region: str | None = None
    object_lock_days: int = Field(0, ge=0)
    # S3 request checksums: "when_required" keeps S3-compatible stores working (boto3 >= 1.36 default breaks many).
    checksum_mode: Literal["when_required", "when_supported"] = "when_required"
    # Initial multipart part size; grown automatically so a stream of unknown length never hits 10,000 parts.
    part_size: int = Field(16 * 1024 * 1024, ge=5 * 1024 * 1024)
    upload_concurrency: int = Field(2, ge=1, le=32)
    max_attempts: int = Field(5, ge=1, le=20)
    # A store that ignores If-None-Match: * (create-only writes): "fallback" guards them (docs/storage.md),
    # "refuse" refuses every create-only write there.
    conditional_writes: Literal["fallback", "refuse"] = "fallback"

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not (value.startswith("file://") or value.startswith("s3://")):
            raise ValueError(f"unsupported repository URL {value!r}: use file:///path or s3://bucket/prefix")
        if value.startswith("s3://") and len(value) <= len("s3://"):
            raise ValueError("s3:// URL needs a bucket: s3://bucket/prefix")
        return value

    @field_validator("part_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value)


class EncryptionConfig(_Section):
    key_file: Path | None = None
    key_env: str | None = None
    required: bool = False
    # Older keys, for reading only (a rotation keeps the previous key here until nothing needs it).
    read_key_files: list[Path] = []

    @model_validator(mode="after")
    def _one_source(self) -> EncryptionConfig:
        if self.key_file and self.key_env:
            raise ValueError("set key_file or key_env, not both")
        if self.required and not (self.key_file or self.key_env):
            raise ValueError("required = true but no key_file or key_env is set")
        return self


class CompressionConfig(_Section):
    algorithm: Literal["zstd", "gzip", "none"] = "zstd"
    level: int = Field(3, ge=0, le=22)
    # zstd worker threads for backups and dumps (as `zstd -T2`); 0 = compress on the reading thread.
    # WAL files are always compressed single-threaded: the WAL helper parallelises across files.
    threads: int = Field(2, ge=0, le=64)
    # Where zstd base backups are compressed: "server" (pg_basebackup --compress=server-zstd, as
    # pgBackRest compresses on the database host: about a quarter less CPU per backup in
    # bench/backup_cpu.py, 20x less data to move) falls back to "client" by itself when the server's
    # build has no zstd; "client" always compresses here.
    location: Literal["server", "client"] = "server"

    @model_validator(mode="after")
    def _level_range(self) -> CompressionConfig:
        if self.algorithm == "gzip" and not 1 <= self.level <= 9:
            raise ValueError("gzip level must be between 1 and 9")
        return self


class RetentionConfig(_Section):
    keep_last: int | None = Field(None, ge=1)
    window: timedelta | None = None
    daily: int = Field(0, ge=0)
    weekly: int = Field(0, ge=0)
    monthly: int = Field(0, ge=0)
    yearly: int = Field(0, ge=0)
    min_age: timedelta = timedelta(hours=1)
    dumps_keep_last: int | None = Field(None, ge=1)
    dumps_daily: int = Field(0, ge=0)
    dumps_weekly: int = Field(0, ge=0)
    dumps_monthly: int = Field(0, ge=0)

    _durations = field_validator("window", "min_age", mode="before")(classmethod(lambda cls, v: _duration(v)))


class ReplicaConfig(_Section):
    name: str
    conninfo: str


class ClusterConfig(_Section):
    conninfo: str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
    pg_bin_dir: Path | None = None
    os_user: str = "postgres"
    timezone: str = "UTC"
    heartbeat_schema: str = "public"
    retention: RetentionConfig = RetentionConfig()
    replicas: list[ReplicaConfig] = []
    # replica lag thresholds (warning, critical); CLI flags override the critical ones
    lag_warning_bytes: int = Field(16 * 1024 * 1024, ge=0)
    lag_critical_bytes: int = Field(256 * 1024 * 1024, ge=0)
    lag_warning_seconds: float = Field(60, ge=0)
    lag_critical_seconds: float = Field(300, ge=0)
    slot_retained_warning_bytes: int = Field(1024**3, ge=0)
    # how long `backup` waits for the WAL between its start and stop LSN to reach the archive
    archive_wait: timedelta = timedelta(minutes=2)

    _tz = field_validator("timezone")(classmethod(lambda cls, v: _timezone(v)))
    _wait = field_validator("archive_wait", mode="before")(classmethod(lambda cls, v: _duration(v)))
    _sizes = field_validator("lag_warning_bytes", "lag_critical_bytes", "slot_retained_warning_bytes", mode="before")(
        classmethod(lambda cls, v: parse_size(v))
    )


class ScheduleJob(_Section):
    cron: str
    command: str
    cluster: str | None = None
    timezone: str = "UTC"
    jitter: timedelta = timedelta(0)
    timeout: timedelta | None = None

    _tz = field_validator("timezone")(classmethod(lambda cls, v: _timezone(v)))
    _durations = field_validator("jitter", "timeout", mode="before")(
        classmethod(lambda cls, v: None if v is None else _duration(v))
    )


class WalConfig(_Section):
    async_: bool = Field(False, alias="async")
    agent: bool = True  # accepted and ignored: calls are always served by the one WAL helper (docs/wal.md)
    push_workers: int = Field(4, ge=1, le=64)
    prefetch: int = Field(0, ge=0, le=256)
    spool_dir: Path = Path("/var/spool/opsdb")


class DrillAssertion(_Section):
    database: str
    sql: str
    expect: str
    name: str | None = None


class DrillConfig(_Section):
    provider: Literal["local", "docker"] = "local"
    assertions: list[DrillAssertion] = []
    scratch_dir: Path | None = None  # default: the system temp dir
    docker_image: str = "postgres:{major}"
    largest_tables: int = Field(5, ge=0)
    timeout: timedelta = timedelta(hours=6)

    _durations = field_validator("timeout", mode="before")(classmethod(lambda cls, v: _duration(v)))


class PgbouncerDatabase(_Section):
    dbname: str | None = None
    pool_size: int | None = Field(None, ge=0)
    pool_mode: Literal["session", "transaction", "statement"] | None = None
    max_db_connections: int | None = Field(None, ge=0)
    reserve_pool_size: int | None = Field(None, ge=0)


class PgbouncerConfig(_Section):
    listen_addr: str = "127.0.0.1"
    listen_port: int = Field(6432, ge=1, le=65535)
    pool_mode: Literal["session", "transaction", "statement"] = "transaction"
    instances: int = Field(1, ge=1)
    users: list[str] | None = None
    max_client_conn: int = Field(1000, ge=1)
    default_pool_size: int | None = Field(None, ge=0)  # None: computed from the server
    min_pool_size: int = Field(0, ge=0)
    reserve_pool_size: int = Field(0, ge=0)
    reserve_pool_timeout: float = Field(5.0, ge=0)
    max_db_connections: int | None = Field(None, ge=0)
    max_user_connections: int = Field(0, ge=0)  # server connections per user over all databases; 0 = unlimited
    server_reserve: int = Field(5, ge=0)  # connections kept free for direct clients (backups, monitoring)
    server_lifetime: int = Field(3600, ge=0)
    server_idle_timeout: int = Field(600, ge=0)
    query_wait_timeout: int = Field(120, ge=0)
    auth_type: Literal["scram-sha-256", "md5", "hba", "cert", "trust"] = "scram-sha-256"
    auth_file: str = "userlist.txt"
    auth_hba_file: str | None = None  # required by auth_type = "hba"; written as given (relative: to --out-dir)
    auth_user: str | None = None
    auth_query: str | None = None
    auth_dbname: str | None = None  # a [databases] name auth_query runs in (PgBouncer >= 1.19)
    admin_users: list[str] = []
    stats_users: list[str] = []
    client_tls_sslmode: str = "disable"
    client_tls_cert_file: str | None = None
    client_tls_key_file: str | None = None
    client_tls_ca_file: str | None = None
    server_tls_sslmode: str = "prefer"
    server_tls_ca_file: str | None = None
    server_tls_cert_file: str | None = None  # client certificate pgbouncer shows the server (with the key)
    server_tls_key_file: str | None = None
    ignore_startup_parameters: list[str] = ["extra_float_digits", "options"]
    max_prepared_statements: int = Field(200, ge=0)
    logfile: str | None = None
    pidfile: str | None = None
    unix_socket_dir: str | None = None
    databases: dict[str, PgbouncerDatabase] = {}
    # the pgbouncer executable (None: `pgbouncer` on PATH, else /usr/sbin/pgbouncer) and the version to
    # write for ("1.18"; None: what `pgbouncer -V` reports)
    binary: str | None = None
    target_version: str | None = None
    # `pgbouncer status` grading: a client waiting this long is WARNING; CRITICAL from status_wait_critical
    # (None: half the running pgbouncer's query_wait_timeout); client connections as % of max_client_conn
    status_wait_warning: float = Field(5.0, ge=0)
    status_wait_critical: float | None = Field(None, ge=0)
    status_clients_warning_pct: float = Field(80.0, ge=0, le=100)
    status_clients_critical_pct: float = Field(95.0, ge=0, le=100)

    @field_validator("target_version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        import re  # local: this class is the only user

        if value is not None and not re.fullmatch(r"\d+\.\d+(\.\d+)?", value.strip()):
            raise ValueError(f"target_version {value!r} is not a PgBouncer version such as '1.18' or '1.21.0'")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _pairs(self) -> PgbouncerConfig:
        if bool(self.server_tls_cert_file) != bool(self.server_tls_key_file):
            raise ValueError("set server_tls_cert_file and server_tls_key_file together")
        if self.auth_type == "hba" and not self.auth_hba_file:
            raise ValueError('auth_type = "hba" needs auth_hba_file')
        if self.status_wait_critical is not None and self.status_wait_critical < self.status_wait_warning:
            raise ValueError("status_wait_critical is below status_wait_warning")
        if self.status_clients_critical_pct < self.status_clients_warning_pct:
            raise ValueError("status_clients_critical_pct is below status_clients_warning_pct")
        return self


class NotifyConfig(_Section):
    webhook_url: str | None = None
    on_success: bool = False
    timeout: float = Field(10, gt=0)


class LogConfig(_Section):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"
    # a log file per command kind, e.g. "/var/log/opsdb/{cluster}-{command}.log" (lines appended)
    file: str | None = None


class SchedulerConfig(_Section):
    state_dir: Path | None = None  # job history and per-job locks; default /var/lib/opsdb/scheduler
    grace: timedelta = timedelta(minutes=5)  # how long a running job may finish after SIGTERM

    _durations = field_validator("grace", mode="before")(classmethod(lambda cls, v: _duration(v)))


class MetricsConfig(_Section):
    textfile: Path | None = None  # refreshed after each scheduled job when set


class Settings(BaseModel):
    """The whole configuration. Built only by load_settings() (with OPSDB_ overrides: an instance of
    the pydantic-settings subclass from _environment_settings())."""

    # validate_default as pydantic-settings' BaseSettings does, so both ways build the same settings
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_default=True)

    repository: RepositoryConfig = RepositoryConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    compression: CompressionConfig = CompressionConfig()
    clusters: dict[str, ClusterConfig] = {}
    schedule: dict[str, ScheduleJob] = {}
    wal: WalConfig = WalConfig()
    drill: DrillConfig = DrillConfig()
    pgbouncer: PgbouncerConfig = PgbouncerConfig()
    notify: NotifyConfig = NotifyConfig()
    log: LogConfig = LogConfig()
    metrics: MetricsConfig = MetricsConfig()
    scheduler: SchedulerConfig = SchedulerConfig()

    # where the settings came from (not a config key): used to build archive/restore commands
    config_path: Path | None = Field(None, exclude=True)

    def cluster(self, name: str | None) -> tuple[str, ClusterConfig]:
        """The cluster named on the command line, or the only one configured."""
        if name is not None:
            if name not in self.clusters:
                known = ", ".join(sorted(self.clusters)) or "none configured"
                raise UsageError(
                    f"unknown cluster {name!r} (configured: {known})",
                    hint=f"pass --cluster with a configured name, or add [clusters.{name}] to the config",
                )
            return name, self.clusters[name]
        if len(self.clusters) == 1:
            only = next(iter(self.clusters))
            return only, self.clusters[only]
        if not self.clusters:
            raise UsageError(
                "no cluster configured", hint="add a [clusters.NAME] section with a conninfo to the config file"
            )
        raise UsageError(f"several clusters configured ({', '.join(sorted(self.clusters))}): pass --cluster NAME")


ENV_PREFIX = "OPSDB_"


def has_environment_overrides(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether any OPSDB_ variable names a config key (OPSDB_CONFIG, which names the file, does not)."""
    fields = {name for name in Settings.model_fields if name != "config_path"}
    for name in environ:
        if name.upper().startswith(ENV_PREFIX):
            first = name[len(ENV_PREFIX) :].lower().split("__", 1)[0]
            if first in fields:
                return True
    return False


@functools.cache
def _environment_settings() -> type[Settings]:
    """Settings that also read OPSDB_ variables (pydantic-settings), which beat the file."""
    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

    class EnvironmentSettings(BaseSettings, Settings):
        model_config = SettingsConfigDict(
            env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", populate_by_name=True
        )

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # environment beats the file (passed as init kwargs); no .env or secrets dirs
            return (env_settings, init_settings)

    return EnvironmentSettings


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config file per the SPEC's order, or None for the embedded default."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"unable to read config {path}: no such file", hint="check --config PATH")
        return path
    env_path = os.environ.get("OPSDB_CONFIG")
    if env_path:
        path = Path(env_path)
        if not path.is_file():
            raise ConfigError(f"unable to read config {path} (from $OPSDB_CONFIG): no such file")
        return path
    for candidate in SEARCH_PATHS:
        if candidate.is_file():
            return candidate
    return None


def _format_validation_error(exc: ValidationError, source: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])  # list indexes too: jobs.0.name
    loc = loc.replace("async_", "async")
    msg = first["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if first["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling against config/opsdb.example.toml)"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"invalid configuration in {source}: {loc}: {msg}{suffix}"


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Find, parse and validate the configuration. Raises ConfigError with one line."""
    file = find_config_file(path)
    data: dict[str, Any] = {}
    if file is not None:
        try:
            with open(file, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"unable to parse config {file}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"unable to read config {file}: {exc.strerror}") from None
    source = str(file) if file else "the environment"
    settings_class = _environment_settings() if has_environment_overrides() else Settings
    try:
        settings = settings_class(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    settings.config_path = file.resolve() if file else None
    return settings
