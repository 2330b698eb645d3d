"""The local OCI image store (``~/.local/share/sealpy/store`` or ``--root``): where builds,
``pull`` and ``load`` put images and ``push``, ``save`` and builds read them.

- :mod:`.layout` — the store on disk: an OCI image layout plus a name index.
- :mod:`.transfer` — pull, push, save and load: copies between the store and a registry
  or an archive.
"""
