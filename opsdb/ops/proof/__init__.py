"""Proof that backups restore: `opsdb verify` re-reads every stored object (verify, verify_progress;
the manifest check is common/backup_manifest.py); `opsdb drill` plans a target, restores into a scratch instance, replays, checks and
reports (drill, drill_plan, drill_restore, drill_checks, drill_run, scratch); `opsdb heartbeat` writes
the row drills measure against; `opsdb demo` tours it all on a throwaway cluster (demo, demo_archive)."""
