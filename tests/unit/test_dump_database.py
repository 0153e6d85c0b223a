"""ops.dump.database: which archive entries describe the database, and renaming their SQL."""

from __future__ import annotations

from opsdb.ops.dump.database import database_entries, rename_database_sql

LISTING = """;
; Archive created at 2026-12-05 02:42:13 UTC
;
4395; 1262 16384 DATABASE - appdb app
4396; 0 0 COMMENT - DATABASE appdb app
4397; 0 0 DATABASE PROPERTIES - appdb app
215; 1259 16385 TABLE public orders app
4398; 0 0 ACL - DATABASE appdb app
4399; 0 0 COMMENT - TABLE orders app
"""


def test_database_entries_are_the_database_and_its_comment_properties_and_acl() -> None:
    assert [line.split(";")[0] for line in database_entries(LISTING)] == ["4395", "4396", "4397", "4398"]


def test_rename_rewrites_the_statements_naming_the_database_and_nothing_else() -> None:
    script = "\n".join(
        [
            "CREATE DATABASE appdb WITH TEMPLATE = template0 ENCODING = 'LATIN1' LOCALE = 'C';",
            "ALTER DATABASE appdb OWNER TO app;",
            "\\connect appdb",
            "COMMENT ON DATABASE appdb IS 'copy of DATABASE appdb for billing';",
            "ALTER DATABASE appdb SET work_mem TO '7MB';",
            "ALTER ROLE reader IN DATABASE appdb SET statement_timeout TO '5s';",
            "REVOKE CONNECT,TEMPORARY ON DATABASE appdb FROM PUBLIC;",
            "GRANT CONNECT ON DATABASE appdb TO reader;",
            "-- Name: appdb; Type: DATABASE PROPERTIES",
        ]
    )
    renamed = rename_database_sql(script, "appdb", 'new "db"').splitlines()
    new = '"new ""db"""'
    assert renamed == [
        f"CREATE DATABASE {new} WITH TEMPLATE = template0 ENCODING = 'LATIN1' LOCALE = 'C';",
        f"ALTER DATABASE {new} OWNER TO app;",
        f"COMMENT ON DATABASE {new} IS 'copy of DATABASE appdb for billing';",
        f"ALTER DATABASE {new} SET work_mem TO '7MB';",
        f"ALTER ROLE reader IN DATABASE {new} SET statement_timeout TO '5s';",
        f"REVOKE CONNECT,TEMPORARY ON DATABASE {new} FROM PUBLIC;",
        f"GRANT CONNECT ON DATABASE {new} TO reader;",
        "-- Name: appdb; Type: DATABASE PROPERTIES",
    ]


def test_a_quoted_name_is_recognised() -> None:
    sql = rename_database_sql("ALTER DATABASE \"prop db\" SET work_mem TO '1MB';", "prop db", "copy")
    assert sql == "ALTER DATABASE \"copy\" SET work_mem TO '1MB';\n"
