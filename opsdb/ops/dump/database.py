"""restore-dump's databases themselves: created with the properties the dump recorded.

`pg_dump -Fc` stores the database as archive (TOC) entries of its own: DATABASE (CREATE DATABASE
with encoding, locale and template0, then ALTER DATABASE ... OWNER TO), DATABASE PROPERTIES
(ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET, connection limit, ...), and COMMENT,
ACL and SECURITY LABEL entries on the DATABASE. pg_restore applies them only with --create, and
only under the archive's own name:

* same name: `pg_restore --create` connected to the maintenance database does it all;
* another name (`restore-dump --as NEW`): only those entries are rendered as SQL (`pg_restore -l`,
  then `-L` with just them, no server), the name is rewritten where each statement names the
  database, and psql runs the script on the maintenance database; the contents follow as usual.
"""

from __future__ import annotations

import os
import re
import tempfile

from opsdb.pg.tools import PgTools
from opsdb.proc import Runner

# `pg_restore -l` lines of the entries that describe the database itself, e.g.
#   "4395; 1262 16384 DATABASE - appdb app", "4396; 0 0 DATABASE PROPERTIES - appdb app",
#   "4397; 0 0 COMMENT - DATABASE appdb app", "4398; 0 0 ACL - DATABASE appdb app"
_DATABASE_ENTRY = re.compile(r"^\d+; \d+ \d+ (DATABASE( PROPERTIES)? - |(COMMENT|ACL|SECURITY LABEL) - DATABASE )")
# statements that name the database after the word DATABASE (the first such mention is the name)
_NAMING_STATEMENT = re.compile(
    r"^(CREATE DATABASE|ALTER DATABASE|ALTER ROLE|COMMENT ON DATABASE|GRANT|REVOKE|SECURITY LABEL)\b"
)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def database_entries(listing: str) -> list[str]:
    """The TOC lines (of `pg_restore -l`) that create and describe the database itself."""
    return [line for line in listing.splitlines() if _DATABASE_ENTRY.match(line)]


def rename_database_sql(script: str, old: str, new: str) -> str:
    """The database entries' SQL (pg_restore --create -f -) for `new` instead of `old`: the name is
    rewritten where a statement names the database (never inside a comment's text), and
    \\connect lines are dropped (the statements run from the maintenance database)."""
    mention = re.compile(r"(\bDATABASE\s+)(" + re.escape(quote_ident(old)) + "|" + re.escape(old) + r")(?=[\s;])")
    out = []
    for line in script.splitlines():
        if line.startswith("\\connect"):
            continue
        if _NAMING_STATEMENT.match(line):
            line = mention.sub(lambda m: m.group(1) + quote_ident(new), line, count=1)
        out.append(line)
    return "\n".join(out) + "\n"


def database_sql(runner: Runner, tools: PgTools, archive: str, old: str, new: str) -> str:
    """SQL that creates database `new` with the properties `archive` recorded for `old`."""
    # --create: without it pg_restore leaves the database's own entries out of the listing too
    listing_cmd = tools.pg_restore(None, input_path=archive, list_only=True, create=True)
    listing = runner.run(listing_cmd, doing="listing the dump").text
    entries = database_entries(listing)
    fd, list_path = tempfile.mkstemp(prefix="opsdb-restore-dump-", suffix=".list")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(entries) + "\n")
        cmd = tools.pg_restore(None, input_path=archive, create=True, extra=("-L", list_path, "-f", "-"))
        script = runner.run(cmd, doing=f"reading the properties of database {old} from the dump").text
    finally:
        os.unlink(list_path)
    if not entries:  # a dump without a DATABASE entry (not made by pg_dump -Fc): create it plainly
        return f"CREATE DATABASE {quote_ident(new)} TEMPLATE template0;\n"
    return rename_database_sql(script, old, new)
