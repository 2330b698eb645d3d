"""sealpy: build Sealos cluster images — an application plus every container image it needs.

The pipeline is three plain functions in :mod:`sealpy.core.pipeline`:
``scan`` (context → :class:`~sealpy.core.model.ImageSet`), ``cache`` (image set →
``<context>/registry`` through a strategy) and ``build`` (context → image in the store).
"""

__version__ = "0.1.0"
