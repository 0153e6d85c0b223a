"""pgbouncer generate's file building without a server: determinism, version gating, verifier rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from opsdb.config import PgbouncerConfig
from opsdb.errors import ConfigError, UsageError
from opsdb.model.pgbouncer import ServerLimits
from opsdb.model.pgbouncer_ini import NEWEST_KNOWN, check_text, parse_ini, parse_userlist
from opsdb.ops.pooler.files import DEFAULT_AUTH_QUERY, ServerFacts, build_files
from opsdb.ops.pooler.target import TargetVersion, find_pgbouncer, target_version
from opsdb.proc import LocalRunner
from tests.fakes import FakeRunner

SCRAM = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"
SERVER = "host=10.0.0.5 port=5433 user=postgres dbname=postgres"


def _facts(**kw):
    base = dict(
        limits=ServerLimits(100, 3),
        databases=("app", "postgres"),
        users=("app",),
        verifiers={"app": SCRAM},
        discovered=True,
    )
    base.update(kw)
    return ServerFacts(**base)


def _build(cfg=None, facts=None, version=(1, 25, 0), source="pgbouncer -V", hba_file=None):
    return build_files(
        cfg or PgbouncerConfig(),
        SERVER,
        facts or _facts(),
        auth_file="/etc/pgb/userlist.txt",
        target=TargetVersion(version, source),
        hba_file=hba_file,
    )


def test_same_input_same_bytes_and_a_valid_file():
    first, second = _build(), _build()
    assert first.ini == second.ini and first.userlist == second.userlist
    doc = parse_ini(first.ini)
    assert [f for f in check_text(doc, (1, 25, 0)) if f.level == "error"] == []
    assert doc.section("databases") == {
        "app": "host=10.0.0.5 port=5433 dbname=app",
        "postgres": "host=10.0.0.5 port=5433 dbname=postgres",
    }
    assert doc.value("default_pool_size") == "46"  # (100 - 3 - 5) // (2 dbs * 1 user)
    assert doc.value("max_prepared_statements") == "200"
    entries, problems = parse_userlist(first.userlist)
    assert problems == [] and [(e.user, e.secret) for e in entries] == [("app", SCRAM)]


def test_settings_newer_than_the_target_are_commented_out():
    files = _build(version=(1, 18, 0))
    assert parse_ini(files.ini).value("max_prepared_statements") is None
    assert ";max_prepared_statements = 200" in files.ini
    assert any("max_prepared_statements" in n for n in files.notes)
    assert [f for f in check_text(parse_ini(files.ini), (1, 18, 0)) if f.level == "error"] == []


def test_config_databases_override_discovered_ones():
    cfg = PgbouncerConfig(databases={"reporting": {"dbname": "rep db", "pool_size": 3, "pool_mode": "session"}})
    files = _build(cfg)
    assert "reporting = host=10.0.0.5 port=5433 dbname='rep db' pool_size=3 pool_mode=session" in files.ini
    assert files.databases == ("app", "postgres", "reporting")


def test_auth_user_gets_a_schema_qualified_query_and_a_userlist_entry():
    cfg = PgbouncerConfig(auth_user="pgb_auth")
    files = _build(cfg, _facts(verifiers={"app": SCRAM, "pgb_auth": SCRAM}))
    doc = parse_ini(files.ini)
    assert doc.value("auth_query") == DEFAULT_AUTH_QUERY and "pg_catalog.pg_authid" in DEFAULT_AUTH_QUERY
    assert '"pgb_auth"' in files.userlist


def test_verifier_problems_are_refused():
    with pytest.raises(UsageError, match="MD5 passwords"):
        _build(facts=_facts(verifiers={"app": "md5" + "a" * 32}))
    with pytest.raises(UsageError, match="no such role"):
        _build(facts=_facts(verifiers={}))
    with pytest.raises(UsageError, match="no password set"):
        _build(facts=_facts(verifiers={"app": None}))
    md5_ok = _build(PgbouncerConfig(auth_type="md5"), _facts(verifiers={"app": "md5" + "a" * 32}))
    assert md5_ok.userlist.startswith('"app" "md5')


def test_without_discover_no_userlist_and_users_from_config():
    facts = ServerFacts(ServerLimits(100, 3))
    files = _build(PgbouncerConfig(users=["app", "web"], databases={"app": {}}), facts)
    assert files.userlist is None
    assert any("--discover" in n for n in files.notes)
    assert parse_ini(files.ini).value("default_pool_size") == "46"  # 92 // (1 db * 2 users)


def test_refusals():
    with pytest.raises(UsageError, match="reserved"):
        _build(PgbouncerConfig(databases={"pgbouncer": {}}))
    with pytest.raises(ConfigError, match="no databases"):
        _build(facts=ServerFacts(ServerLimits(100, 3)))
    with pytest.raises(UsageError, match="client_tls_cert_file"):
        _build(PgbouncerConfig(client_tls_sslmode="require"))


def test_console_users_join_the_userlist_when_they_have_a_verifier():
    cfg = PgbouncerConfig(admin_users=["dba"], stats_users=["monitor"])
    files = _build(cfg, _facts(verifiers={"app": SCRAM, "dba": SCRAM}))
    users = [e.user for e in parse_userlist(files.userlist)[0]]
    assert users == ["app", "dba"]
    assert any("'monitor' has no verifier" in n for n in files.notes)


# --- auth_hba_file, auth_dbname, server TLS client certificate, max_user_connections, version --------


def test_auth_type_hba_writes_the_hba_file_and_is_refused_without_one():
    cfg = PgbouncerConfig(auth_type="hba", auth_hba_file="pg_hba.conf")
    first = _build(cfg, hba_file="/etc/pgb/pg_hba.conf")
    assert first.ini == _build(cfg, hba_file="/etc/pgb/pg_hba.conf").ini  # same input, same bytes
    doc = parse_ini(first.ini)
    assert doc.value("auth_type") == "hba"
    assert doc.value("auth_hba_file") == "/etc/pgb/pg_hba.conf"
    assert doc.value("auth_file") == "/etc/pgb/userlist.txt"  # hba methods md5/scram still read it
    assert [f for f in check_text(doc) if f.level == "error"] == []
    with pytest.raises(ValidationError, match="auth_hba_file"):
        PgbouncerConfig(auth_type="hba")
    with pytest.raises(UsageError, match="needs pgbouncer.auth_hba_file"):
        _build(cfg, hba_file=None)
    # set without auth_type hba: written (harmless) with a note
    other = _build(PgbouncerConfig(auth_hba_file="pg_hba.conf"), hba_file="/etc/pgb/pg_hba.conf")
    assert any("only read with auth_type = hba" in n for n in other.notes)


def test_auth_dbname_is_written_and_its_refusals():
    facts = _facts(verifiers={"app": SCRAM, "pgb_auth": SCRAM})
    cfg = PgbouncerConfig(auth_user="pgb_auth", auth_dbname="postgres")
    doc = parse_ini(_build(cfg, facts).ini)
    assert doc.value("auth_dbname") == "postgres"
    assert [f for f in check_text(doc) if f.level == "error"] == []
    with pytest.raises(UsageError, match="only used with auth_user"):
        _build(PgbouncerConfig(auth_dbname="postgres"))
    with pytest.raises(UsageError, match="'nope' is not one of the pooled databases"):
        _build(PgbouncerConfig(auth_user="pgb_auth", auth_dbname="nope"), facts)
    # commenting it out would move auth_query into every client's database: refused instead
    with pytest.raises(UsageError, match=r"needs PgBouncer >= 1\.19\.0, target is 1\.18\.0"):
        _build(cfg, facts, version=(1, 18, 0))
    assert parse_ini(_build(cfg, facts, version=(1, 19, 0)).ini).value("auth_dbname") == "postgres"


def test_server_tls_client_certificate():
    cfg = PgbouncerConfig(
        server_tls_sslmode="verify-full",
        server_tls_ca_file="/etc/pgb/root.crt",
        server_tls_cert_file="/etc/pgb/client.crt",
        server_tls_key_file="/etc/pgb/client.key",
    )
    text = _build(cfg).ini
    assert "server_tls_cert_file = /etc/pgb/client.crt\nserver_tls_key_file = /etc/pgb/client.key\n" in text
    assert "server_tls_sslmode = verify-full\n" in text
    with pytest.raises(ValidationError, match="together"):
        PgbouncerConfig(server_tls_cert_file="/etc/pgb/client.crt")


def test_max_user_connections_line_and_sizing():
    assert "; 0 = unlimited\nmax_user_connections = 0\n" in _build().ini
    cfg = PgbouncerConfig(max_user_connections=30, users=["app", "web"])
    files = _build(cfg, _facts(users=("app", "web"), verifiers={"app": SCRAM, "web": SCRAM}))
    assert parse_ini(files.ini).value("max_user_connections") == "30"
    # 92 usable; the databases may hold 46 + 46, the 2 users at most 2 * 30 = 60
    assert ";   users cap = 2 users * 30 max_user_connections = 60 per instance" in files.ini
    assert files.plan.worst_case_total == 60


def test_target_version_from_config_is_used_without_asking_the_binary():
    runner = FakeRunner()
    target = target_version("1.18", runner, "/usr/sbin/pgbouncer")
    assert target == TargetVersion((1, 18, 0), "target_version") and runner.calls == []
    files = _build(PgbouncerConfig(target_version="1.18"), version=target.version, source=target.source)
    assert "; Target: PgBouncer 1.18.0 (pgbouncer.target_version)." in files.ini
    assert ";max_prepared_statements = 200" in files.ini
    assert files.target_source == "target_version"
    with pytest.raises(ValidationError, match="not a PgBouncer version"):
        PgbouncerConfig(target_version="latest")


def test_target_version_from_the_binary_or_assumed():
    runner = FakeRunner().script("pgbouncer", stdout=b"PgBouncer 1.21.0\nlibevent 2.1.12-stable\n")
    assert target_version(None, runner, "/opt/pgb/bin/pgbouncer") == TargetVersion((1, 21, 0), "pgbouncer -V")
    assert runner.argvs == [("/opt/pgb/bin/pgbouncer", "-V")]
    assumed = target_version(None, FakeRunner(), None)
    assert assumed == TargetVersion(NEWEST_KNOWN, "assumed")
    broken = FakeRunner().script("pgbouncer", returncode=1)
    assert target_version(None, broken, "/usr/sbin/pgbouncer").source == "assumed"
    files = _build(version=assumed.version, source="assumed")
    assert any("no pgbouncer binary found" in n for n in files.notes)


def test_configured_binary_must_be_executable(tmp_path):
    with pytest.raises(UsageError, match="not an executable file"):
        find_pgbouncer(str(tmp_path / "nope"))
    script = tmp_path / "pgbouncer"
    script.write_text("#!/bin/sh\necho 'PgBouncer 1.19.1'\n")
    with pytest.raises(UsageError, match="not an executable file"):
        find_pgbouncer(str(script))
    script.chmod(0o755)
    assert find_pgbouncer(str(script)) == str(script)
    # a real run of the configured binary's -V
    assert target_version(None, LocalRunner(), str(script)) == TargetVersion((1, 19, 1), "pgbouncer -V")


def test_every_new_key_together_is_deterministic():
    cfg = PgbouncerConfig(
        auth_type="hba",
        auth_hba_file="/etc/pgb/hba.conf",
        auth_user="pgb_auth",
        auth_dbname="app",
        server_tls_cert_file="c.crt",
        server_tls_key_file="c.key",
        max_user_connections=40,
        target_version="1.21",
    )
    facts = _facts(verifiers={"app": SCRAM, "pgb_auth": SCRAM})
    runs = {_build(cfg, facts, version=(1, 21, 0), hba_file="/etc/pgb/hba.conf").ini for _ in range(3)}
    assert len(runs) == 1
    main = parse_ini(runs.pop()).section("pgbouncer")
    assert {k: main[k] for k in ("auth_hba_file", "auth_dbname", "server_tls_cert_file", "max_user_connections")} == {
        "auth_hba_file": "/etc/pgb/hba.conf",
        "auth_dbname": "app",
        "server_tls_cert_file": "c.crt",
        "max_user_connections": "40",
    }


def test_generate_notes_a_missing_or_broken_hba_file(tmp_path):
    from opsdb.ops.pooler.generate import _hba_notes

    missing = _hba_notes(tmp_path / "hba.conf", (1, 18, 0))
    assert missing == [
        f"auth_hba_file {tmp_path}/hba.conf: No such file or directory; PgBouncer rejects every login until it exists"
    ]
    (tmp_path / "hba.conf").write_text("host all all 127.0.0.1/32 scram-sha-256\nhost all all all md5\n")
    assert _hba_notes(tmp_path / "hba.conf", (1, 18, 0)) == [
        f"{tmp_path}/hba.conf: auth_hba_file line 2: 'all' is not an IP address (PgBouncer takes no host names, "
        "all, samehost or samenet) (PgBouncer ignores this line)"
    ]
