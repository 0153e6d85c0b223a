"""WAL archiving: wal-push and wal-fetch themselves (push_fetch), the one background WAL helper per
cluster that serves them (helper), its push-ahead and prefetch (ahead), and the spool protocol the
call side speaks to it (spool, standard library only). The WAL fast path imports these modules for
every segment PostgreSQL archives or restores, so this `__init__` imports nothing."""
