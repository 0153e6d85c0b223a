"""Is an installation working: `opsdb check` (check: machine, server, repository, encryption; as_server:
the same proof as the server's own archive_command runs, as its os_user) and `opsdb metrics`, what
Prometheus should alert on (metrics: backups, WAL, window, drills, replicas, scheduled jobs)."""
