"""The only module that runs subprocesses (placeholder: being written)."""
