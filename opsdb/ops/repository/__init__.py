"""A cluster's repository as a whole: `opsdb info` (info: per timeline the backups, the WAL archived,
gaps and the recoverable window), which encryption key ids its objects name (key_ids), and `opsdb
reinit`, the deliberate move to a new system identifier (reinit)."""
