"""Discovery source: manifests (not implemented yet: registers nothing)."""
