"""The HTTP layer under the registry client, in go-containerregistry's ``remote/transport``
lines: :mod:`.session` (the requests session, one exchange and its error mapping, TLS
failures), :mod:`.scheme` (HTTPS or plain HTTP per host, decided once, probing with a
ping when needed), :mod:`.auth` (``WWW-Authenticate`` challenges, Basic, Bearer tokens and
their cache) and :mod:`.retry` (the retry policy: attempts, jittered backoff,
``Retry-After`` and the failing-time budget). The registry operations built on them are
in :mod:`sealpy.core.transport.remote`.
"""
