"""Logical dumps: `opsdb dump` streams pg_dump archives (and the globals) into the repository and
`opsdb restore-dump` streams them back through pg_restore (logical), creating each database with the
properties the dump recorded (database)."""
