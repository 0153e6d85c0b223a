"""What every capability shares: settings turned into repository adapters (codec), the one privilege
model for files root creates (privileges), the phase log lines operations write (phases) and the
totals behind progress bars (estimate). Nothing here imports another ops package."""
