"""Discovery source: charts (not implemented yet: registers nothing)."""
