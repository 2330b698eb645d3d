"""Images as documents, independent of where they are stored: media types, manifests and
descriptors (:mod:`.media`), walking a manifest tree through a fetch function
(:mod:`.walk`), new manifests, indexes and canonical JSON (:mod:`.compose`), and reading
image configs (:mod:`.config`). The engine, the store, the builders, merge and verify all
use these, so each concept is written once."""
