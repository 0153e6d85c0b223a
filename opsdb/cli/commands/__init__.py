"""Command groups. Each module has register(app) and keeps each command to parse -> one ops call -> output."""
