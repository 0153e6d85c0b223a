"""Pure domain: dataclasses and arithmetic, no I/O."""
