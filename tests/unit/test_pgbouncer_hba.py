"""auth_hba_file lines PgBouncer would drop. Each refused line below was refused by the real
PgBouncer 1.18 binary too ("could not parse hba config line N"), and the accepted ones accepted."""

from __future__ import annotations

from pathlib import Path

from opsdb.model.pgbouncer_hba import check_hba

GOOD = """\
# comment
local   all        pgbouncer                 peer
host    all        app      127.0.0.1/32     scram-sha-256
hostssl app,"x y"  all      ::1/128          md5   # trailing comment
host    all        all      10.0.0.0 255.0.0.0 trust
hostnossl sameuser all      0.0.0.0/0        cert
host    all        all      192.168.0.0/16   reject
host    all        bob      0.0.0.0/0        password
"""


def _errors(text: str, version=(1, 18, 0), base: Path | None = None) -> list[str]:
    return [f.message for f in check_hba(text, version, base) if f.level == "error"]


def test_pgbouncer_1_18_accepts_every_good_line():
    assert _errors(GOOD) == []


def test_lines_the_real_binary_drops_are_errors_naming_the_line(tmp_path):
    bad = [
        ("host app,@dbs sameuser 0.0.0.0/0 password", "@dbs: no such file"),
        ("host all all all reject", "'all' is not an IP address"),
        ("host all all samehost reject", "'samehost' is not an IP address"),
        ("host replication all 0.0.0.0/0 cert", "'replication' needs PgBouncer >= 1.23.0"),
        ("host all +grp 0.0.0.0/0 cert", "group names (+grp) are not supported"),
        ("host all all 0.0.0.0/0 ldap", "method 'ldap' needs PgBouncer >= 1.25.0"),
        ("host all all 127.0.0.1/32 bogusmethod", "unknown method 'bogusmethod'"),
        ("foo bar", "unknown connection type 'foo'"),
        ("host all all 127.0.0.1 md5", "'md5' is not a netmask"),
        ("host all all 127.0.0.1/33 md5", "not an IP address with /bits"),
        ("host samerole all 0.0.0.0/0 md5", "'samerole' is not supported"),
        ("host all all 0.0.0.0/0 md5 clientcert=1", "options after the method"),
        ("local all all", "no method"),
    ]
    text = GOOD + "\n".join(line for line, _ in bad) + "\n"
    errors = _errors(text, base=tmp_path)
    first = len(GOOD.splitlines()) + 1
    assert len(errors) == len(bad)
    for n, ((_, expected), message) in enumerate(zip(bad, errors, strict=True)):
        assert message.startswith(f"auth_hba_file line {first + n}: "), message
        assert expected in message, message
        assert message.endswith("(PgBouncer ignores this line)")


def test_newer_targets_accept_replication_and_ldap_and_include_files_resolve_beside_the_hba(tmp_path):
    assert _errors("host replication all 0.0.0.0/0 cert\n", (1, 23, 0)) == []
    assert _errors("host all all 0.0.0.0/0 ldap ldapurl=x\n", (1, 25, 0)) == []
    (tmp_path / "dbs").write_text("app\n")
    assert _errors("host @dbs all 0.0.0.0/0 md5\n", base=tmp_path) == []


def test_a_file_without_a_usable_rule_rejects_every_login():
    assert _errors("# nothing\n\n") == ["auth_hba_file has no usable rule: PgBouncer would reject every login"]
    assert "no usable rule" in _errors("foo bar\n")[-1]
