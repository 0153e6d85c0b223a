"""Configuration: discovery order, env overrides, one-line errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from opsdb.config import Settings, find_config_file, load_settings
from opsdb.errors import ConfigError, UsageError

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "opsdb.example.toml"


def write(tmp_path: Path, text: str, name: str = "opsdb.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in list(__import__("os").environ):
        if key.startswith("OPSDB_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_embedded_default_without_any_file(tmp_path):
    settings = load_settings(None)
    assert settings.repository.url == "file:///var/lib/opsdb/repo"
    assert settings.compression.algorithm == "zstd"
    assert settings.clusters == {}
    assert settings.config_path is None


def test_discovery_order(tmp_path, monkeypatch):
    cwd_file = write(tmp_path, '[repository]\nurl = "file:///cwd"\n')
    env_file = write(tmp_path, '[repository]\nurl = "file:///env"\n', "env.toml")
    explicit = write(tmp_path, '[repository]\nurl = "file:///explicit"\n', "explicit.toml")
    assert find_config_file(None) == Path("opsdb.toml")
    assert load_settings(None).repository.url == "file:///cwd"
    monkeypatch.setenv("OPSDB_CONFIG", str(env_file))
    assert load_settings(None).repository.url == "file:///env"
    assert load_settings(explicit).repository.url == "file:///explicit"
    assert load_settings(explicit).config_path == explicit.resolve()
    assert cwd_file.exists()


def test_missing_explicit_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_settings(tmp_path / "nope.toml")
    assert exc.value.exit_code == 2
    assert "nope.toml" in str(exc.value)


def test_env_overrides_nest_with_double_underscore(tmp_path, monkeypatch):
    path = write(tmp_path, '[clusters.main]\nconninfo = "host=a"\n[wal]\npush_workers = 2\n')
    monkeypatch.setenv("OPSDB_REPOSITORY__URL", "s3://bucket/prefix")
    monkeypatch.setenv("OPSDB_CLUSTERS__MAIN__CONNINFO", "host=b")
    monkeypatch.setenv("OPSDB_WAL__PUSH_WORKERS", "8")
    monkeypatch.setenv("OPSDB_COMPRESSION__ALGORITHM", "gzip")
    monkeypatch.setenv("OPSDB_COMPRESSION__LEVEL", "6")
    settings = load_settings(path)
    assert settings.repository.url == "s3://bucket/prefix"
    assert settings.clusters["main"].conninfo == "host=b"
    assert settings.wal.push_workers == 8
    assert settings.compression.algorithm == "gzip"


def test_several_clusters_and_cluster_selection(tmp_path):
    path = write(tmp_path, '[clusters.a]\nconninfo="host=a"\n[clusters.b]\nconninfo="host=b"\n')
    settings = load_settings(path)
    assert settings.cluster("b")[1].conninfo == "host=b"
    with pytest.raises(UsageError, match="pass --cluster"):
        settings.cluster(None)
    with pytest.raises(UsageError, match="unknown cluster 'c'"):
        settings.cluster("c")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[compression]\nalgorithm = "lz9"\n', r"compression\.algorithm: Input should be 'zstd', 'gzip' or 'none'"),
        ('[compression]\nalgorithm = "gzip"\nlevel = 12\n', r"compression: .*gzip level must be between 1 and 9"),
        ('[repository]\nurl = "ftp://x"\n', r"repository\.url: unsupported repository URL 'ftp://x'"),
        ('[repositry]\nurl = "s3://x"\n', r"repositry: unknown key"),
        ('[clusters.main]\nconinfo = "x"\n', r"clusters\.main\.coninfo: unknown key"),
        ('[clusters.main.retention]\nwindow = "fortnight"\n', r"clusters\.main\.retention\.window: invalid duration"),
        (
            '[schedule.nightly]\ncron = "0 2 * * *"\ncommand = "backup"\ntimezone = "Mars/Base"\n',
            r"schedule\.nightly\.timezone: unknown timezone 'Mars/Base'",
        ),
        ("[encryption]\nrequired = true\n", r"encryption: .*required = true but no key_file or key_env"),
        ("[wal]\npush_workers = 0\n", r"wal\.push_workers: Input should be greater than or equal to 1"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    message = str(exc.value)
    assert "\n" not in message
    assert exc.value.exit_code == 2
    assert re.search(expected, message), message


def test_toml_syntax_error_is_one_line(tmp_path):
    path = write(tmp_path, "[repository\nurl = 1\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert "unable to parse config" in str(exc.value)
    assert "line 1" in str(exc.value)


def _field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = field.alias or name
        annotation = field.annotation
        paths.add(f"{prefix}{key}")
        for candidate in getattr(annotation, "__args__", ()) + (annotation,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                paths |= _field_paths(candidate, f"{prefix}{key}.")
    return paths


def test_example_config_loads_and_documents_every_key():
    settings = load_settings(EXAMPLE)
    assert settings.clusters["main"].replicas[0].name == "replica1"
    text = EXAMPLE.read_text()
    # every leaf key name appears in the example, either set or as a commented line
    missing = sorted(
        path
        for path in _field_paths(Settings)
        if not re.search(rf"^\s*#?\s*{re.escape(path.split('.')[-1])}\s*=", text, re.MULTILINE)
        and not re.search(rf"\[{re.escape(path)}\]|\[\[.*{re.escape(path.split('.')[-1])}\]\]", text)
        and path.split(".")[-1] not in {"clusters", "schedule", "databases", "assertions", "replicas", "retention"}
    )
    assert missing == []


def test_which_variables_are_overrides():
    from opsdb.config import has_environment_overrides

    assert not has_environment_overrides({"OPSDB_CONFIG": "/etc/x.toml", "OPSDB_TEST_WORKERS": "2", "PATH": "/bin"})
    assert not has_environment_overrides({"OPSDB_CONFIG_PATH": "/x"})  # where the file was: not a config key
    assert has_environment_overrides({"OPSDB_REPOSITORY__URL": "s3://b/p"})
    assert has_environment_overrides({"opsdb_log__level": "debug"})  # pydantic-settings ignores case too
    assert has_environment_overrides({"OPSDB_CLUSTERS__MAIN__CONNINFO": "host=x"})


def _load_in_child(tmp_path: Path, env: dict[str, str]) -> dict[str, object]:
    """load_settings in a fresh interpreter: which settings class, whether pydantic-settings loaded."""
    import json
    import os
    import subprocess
    import sys

    config = write(tmp_path, '[repository]\nurl = "file:///srv/from-file"\n')
    code = (
        "import json, sys\n"
        "from opsdb.config import Settings, load_settings\n"
        f"s = load_settings({str(config)!r})\n"
        "print(json.dumps({'url': s.repository.url, 'is_settings': isinstance(s, Settings),\n"
        "                  'pydantic_settings': 'pydantic_settings' in sys.modules}))\n"
    )
    child_env = {k: v for k, v in os.environ.items() if not k.upper().startswith("OPSDB_")} | env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_pydantic_settings_is_loaded_only_for_overrides(tmp_path):
    plain = _load_in_child(tmp_path, {"OPSDB_TEST_WORKERS": "2"})
    assert plain == {"url": "file:///srv/from-file", "is_settings": True, "pydantic_settings": False}
    overridden = _load_in_child(tmp_path, {"OPSDB_REPOSITORY__URL": "s3://bucket/from-env"})
    assert overridden == {"url": "s3://bucket/from-env", "is_settings": True, "pydantic_settings": True}
