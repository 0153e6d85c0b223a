"""Recovery: `opsdb restore` (plan, extract, durable sync, --start) of a full or incremental backup
(restore, restore_chain, restore_manifest, restore_start, extract, tarstream, durable), point-in-time
recovery (pitr: the plan, its reachability checks, where the archived WAL really ends, waiting for the
target), the progress of replay (replay_progress) and which timeline a restore follows (timelines)."""
