"""pgbouncer generate's file building without a server: determinism, version gating, verifier rules."""

from __future__ import annotations

import pytest

from opsdb.config import PgbouncerConfig
from opsdb.errors import ConfigError, UsageError
from opsdb.model.pgbouncer import ServerLimits
from opsdb.model.pgbouncer_ini import check_text, parse_ini, parse_userlist
from opsdb.ops.pgbouncer import DEFAULT_AUTH_QUERY, ServerFacts, build_files

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


def _build(cfg=None, facts=None, version=(1, 25, 0)):
    return build_files(
        cfg or PgbouncerConfig(), SERVER, facts or _facts(), auth_file="/etc/pgb/userlist.txt", version=version
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
