"""Item loaders: where the trainer gets the content of the items users clicked or skipped.

Sessions carry only object ids; the text of each item comes from a loader (S3, local files, a JSONL
catalog, or the results' own ``meta["text"]``), loaded in batches and cached per task.
"""

from trainer.loaders.base import ItemLoader, ItemsNotFound
from trainer.loaders.cache import CachedItemLoader
from trainer.loaders.factory import open_item_loader

__all__ = ["CachedItemLoader", "ItemLoader", "ItemsNotFound", "open_item_loader"]
