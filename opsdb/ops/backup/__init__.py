"""Physical backups: `opsdb backup` streams pg_basebackup's tars into the repository and commits them
(physical), from the server and replication-slot session it chooses (source), as a full backup or an
incremental on a parent (incremental, PostgreSQL 17+), compressed by the server or by opsdb
(compression). Restoring them is recovery's job; this package owns only writing them."""
