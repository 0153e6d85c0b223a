"""Retention: `opsdb retention apply` runs the retention plan (model.retention decides what goes) against
the repository, deleting expired backups, dumps and WAL crash-safe and resumably (apply)."""
