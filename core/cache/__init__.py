"""The cache stage: a context's images into ``<context>/registry``.

- :mod:`.strategy` — what a caching strategy is and how one is chosen.
- :mod:`.verify` — checking (and repairing) a registry directory.
- :mod:`.localregistry` — a stock distribution registry process serving a directory.
- :mod:`.failures` — the one-line error a strategy raises for the images that failed.
"""
