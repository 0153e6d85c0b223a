"""What the capabilities share: settings turned into repository adapters (codec), the one privilege
model for files root creates (privileges), the phase log lines operations write (phases), the
totals behind progress bars (estimate) and PostgreSQL's backup_manifest checks that verify and restore
both run (backup_manifest). Nothing here imports another ops package (an import contract says so)."""
