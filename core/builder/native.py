"""The native builder (not implemented yet)."""
