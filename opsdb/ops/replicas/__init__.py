"""Standbys of a cluster: `opsdb replicas check` measures replication lag and slots (lag, also read by
`opsdb metrics`), `opsdb replicas create` builds a new standby from the primary or from a backup
(create), linked to its primary by a primary_conninfo and a passfile (standby_link)."""
