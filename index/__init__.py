"""The vector index that serves searches: versioned collections behind one served alias.

``base`` is the interface, ``milvus_index`` the implementation (Milvus Lite embedded under
``ES_DATA_DIR`` or a Milvus server, the same client code), ``factory`` picks one from settings,
``refresh`` re-embeds the catalog into a new version and switches to it, ``search`` answers queries.
"""

from index.base import Hit, IndexedItem, IndexVersion, NoServedVersion, SearchAnswer, VectorIndex

__all__ = ["Hit", "IndexVersion", "IndexedItem", "NoServedVersion", "SearchAnswer", "VectorIndex"]
