"""opsdb: provable PostgreSQL backups."""

__version__ = "0.1.0"
