"""The buildah builder (not implemented yet)."""
