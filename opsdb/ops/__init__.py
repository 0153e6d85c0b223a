"""Operations, one package per capability: backup, dump, wal, recovery, proof (verify, drill, demo),
pooler (PgBouncer), replicas, retention, health (check, metrics) and repository (info, key ids,
reinit); `common` holds what they share. Each takes typed inputs and returns result objects; none
prints or exits. Packages' `__init__` modules import nothing, so importing one module stays cheap."""
