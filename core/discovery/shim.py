"""Discovery source: shim (not implemented yet: registers nothing)."""
