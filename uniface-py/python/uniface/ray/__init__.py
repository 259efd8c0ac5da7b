"""UniFace on Ray: a gallery sharded over Ray actors, and batch embedding with Ray Data.

An optional part of the package (``pip install "uniface[ray]"``); ``import uniface`` never
imports Ray. Two pieces:

- :class:`ShardedGallery`: one Ray actor per shard of a gallery, each holding its shard's
  folder on its node (``uniface.Gallery(root, shard=i)``). Enrollments are routed by subject
  (``uniface.ShardRouter``); identifications are scattered to every shard and gathered with
  ``uniface.merge_candidates`` under the single-process gallery's open-set rule, so the answer
  is the one a single gallery with the same shard count gives. Actors restart after a crash
  (``max_restarts=-1``) and reopen their shard from its write-ahead log; a shard may have
  follower replicas fed by the change feed.
- :func:`embed_dataset`: a Ray Data stage that turns image paths or bytes into one row per face
  (box, landmarks, embedding, quality) on a pool of actors, each loading the models once.
"""

from __future__ import annotations

from ._data import QUALITY_MEASURES, embed_dataset
from ._gallery import ShardedGallery, ShardUnavailableError

__all__ = ["QUALITY_MEASURES", "ShardUnavailableError", "ShardedGallery", "embed_dataset"]
