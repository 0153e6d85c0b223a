"""PostgreSQL wrappers: binaries and command lines (tools), connections (conn, the only psycopg
importer), connection strings (conninfo) and local data directories (instance)."""
