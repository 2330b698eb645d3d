"""Discovery source: archives (not implemented yet: registers nothing)."""
