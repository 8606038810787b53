"""Index refresh and search speed, each against a plain baseline measured in the same run.

Refresh: the catalog of the demo shop (``simulation/data/shop_catalog.json``, its texts repeated with a
numbered suffix up to ``--items``) embedded with all-MiniLM-L6-v2 (or ``--model``) into Milvus Lite:

- ``index_refresh_items_per_s``: ``index.refresh.IndexRefresher.refresh`` — listing the catalog through
  the item loader (a JSON-lines file), embedding in length-sorted batches of ``ES_INDEX_BATCH_SIZE``,
  upserting each batch into a new version, completing it (flush, count check) and switching the alias;
- ``st_encode_insert_items_per_s``: the baseline — one ``SentenceTransformer.encode`` call over every
  text (normalised, batch size 64), then one bulk ``insert`` into a fresh collection and a flush;
- ``index_refresh_ratio``: the first divided by the second (≥ 1: the refresh costs nothing extra);
- ``index_refresh_precision`` and ``index_refresh_cosine_to_fp32_min``: the refresh embeds under
  ``ES_EMBED_PRECISION`` (bf16 autocast where the CPU computes it natively), the baseline in float32;
  the smallest cosine between the two vectors of one text says what that costs.

The model is loaded before either clock starts; each side runs ``--repeats`` times, alternated, and
each figure is its fastest run (on a shared machine other work only slows a run down).

Search: ``search_p50_ms`` / ``search_p99_ms`` at 10k and 100k items — top-10 queries through
``MilvusIndex.search`` (the served version resolved, the collection searched by name) on Milvus Lite,
one query at a time. The vectors are random unit vectors of 384 dimensions (MiniLM's size), so that
100k items load in a minute on 2 cores; query embedding is left out (see ``search_embed_ms`` for
one MiniLM query embedding, measured alone).

Run alone: ``python -m bench.index [--items N] [--model minilm|tiny|PATH] [--repeats R]
[--search-sizes 10000,100000]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SEARCH_DIM = 384


def catalog_texts(n: int) -> list[str]:
    from simulation.shop_catalog import load_shop

    base = [item.text for item in load_shop().items]
    return [base[i % len(base)] + ("" if i < len(base) else f" (variant {i // len(base)})") for i in range(n)]


@functools.lru_cache(maxsize=None)
def _model_path(name: str) -> str:
    if name == "minilm":
        from trainer.base_model import minilm_path

        return str(minilm_path())
    if name == "tiny":
        from simulation.tiny_model import build_tiny_model

        return str(build_tiny_model(Path(tempfile.mkdtemp(prefix="bench-tiny-")) / "model"))
    return name


def bench_refresh(items: int = 2000, model: str = "minilm", repeats: int = 2) -> Iterator[tuple[str, object]]:
    from sentence_transformers import SentenceTransformer

    from index.milvus_index import MilvusIndex
    from index.models import embedder
    from index.refresh import IndexRefresher
    from schemas.settings import Settings
    from trainer.loaders.local import JsonlCatalogLoader

    texts = catalog_texts(items)
    model_path = _model_path(model)
    work = Path(tempfile.mkdtemp(prefix="bench-index-"))
    catalog = work / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"id": f"item-{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    ours_model = embedder(model_path, None, "items")  # loaded (and cached) before the clock starts
    plain = SentenceTransformer(model_path, device=ours_model.device)
    dim = ours_model.get_embedding_dimension()
    yield "index_refresh_items", items
    yield "index_refresh_model", Path(model_path).name
    settings = Settings()
    ours_s, plain_s = [], []
    with MilvusIndex(str(work / "milvus.db"), "bench") as index:
        refresher = IndexRefresher(index, JsonlCatalogLoader(catalog), None, settings.index_batch_size,
                                   settings.embed_precision)
        for _ in range(repeats):
            started = time.perf_counter()
            result = refresher.refresh(model_path)
            ours_s.append(time.perf_counter() - started)
            assert result.version.item_count == items

            started = time.perf_counter()
            vectors = plain.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
            collection = f"plain_{uuid.uuid4().hex[:8]}"
            _plain_collection(index.client, collection, dim)
            index.client.insert(collection, [{"id": f"item-{i}", "text": t, "vector": v.tolist()}
                                             for i, (t, v) in enumerate(zip(texts, vectors))])
            index.client.flush(collection)
            plain_s.append(time.perf_counter() - started)
            index.client.drop_collection(collection)
    yield "index_refresh_items_per_s", items / min(ours_s)
    yield "st_encode_insert_items_per_s", items / min(plain_s)
    yield "index_refresh_ratio", min(plain_s) / min(ours_s)
    # What the refresh's precision costs: its vectors against plain float32 encode, text by text.
    from index.models import encode
    from trainer.precision import resolved_precision

    ours_vectors = encode(ours_model, texts, precision=settings.embed_precision)
    yield "index_refresh_precision", resolved_precision(ours_model.device.type, settings.embed_precision)
    yield "index_refresh_cosine_to_fp32_min", f"{float(np.min(np.sum(ours_vectors * vectors, axis=1))):.6f}"


def _plain_collection(client, name: str, dim: int) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    params = client.prepare_index_params()
    params.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")


def bench_search(sizes: tuple[int, ...] = (10_000, 100_000), queries: int = 200) -> Iterator[tuple[str, object]]:
    from index.base import IndexedItem
    from index.milvus_index import MilvusIndex

    rng = np.random.default_rng(0)
    yield "search_vectors", f"random unit vectors, {SEARCH_DIM} dimensions, top 10"
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    for size in sizes:
        with MilvusIndex(str(work / f"milvus-{size}.db"), "bench") as index:
            version = index.create_version("random", SEARCH_DIM)
            started = time.perf_counter()
            for start in range(0, size, 5000):
                block = rng.normal(size=(min(5000, size - start), SEARCH_DIM)).astype(np.float32)
                block /= np.linalg.norm(block, axis=1, keepdims=True)
                index.upsert(version, [IndexedItem(f"i{start + j}", "", v) for j, v in enumerate(block)])
            index.serve(index.complete(version))
            label = f"{size // 1000}k"
            yield f"search_load_{label}_s", time.perf_counter() - started
            probes = rng.normal(size=(queries, SEARCH_DIM)).astype(np.float32)
            index.search([probes[0].tolist()], 10)  # warm-up
            took = []
            for probe in probes:
                started = time.perf_counter()
                (answer,) = index.search([probe.tolist()], 10)
                took.append((time.perf_counter() - started) * 1000)
                assert len(answer.hits) == 10
            yield f"search_p50_ms_{label}", float(np.percentile(took, 50))
            yield f"search_p99_ms_{label}", float(np.percentile(took, 99))


def bench_query_embedding(model: str = "minilm", queries: int = 50) -> Iterator[tuple[str, object]]:
    from index.models import embedder, encode

    encoder = embedder(_model_path(model), None, "query")
    encode(encoder, ["warm up"])
    took = []
    for i in range(queries):
        started = time.perf_counter()
        encode(encoder, [f"waterproof hiking jacket {i}"])
        took.append((time.perf_counter() - started) * 1000)
    yield "search_embed_ms", float(np.median(took))


def bench_index() -> Iterator[tuple[str, object]]:
    """`make bench`: the refresh on 2,000 shop texts with MiniLM, search at 10k and 100k."""
    yield from bench_refresh()
    yield from bench_search()
    yield from bench_query_embedding()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000, help="Catalog size of the refresh (default 2000).")
    parser.add_argument("--model", default="minilm", help="minilm (default), tiny, or a SentenceTransformer folder.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per side of the refresh (default 2).")
    parser.add_argument("--search-sizes", default="10000,100000", help="Index sizes of the search figures.")
    args = parser.parse_args(argv)
    figures = [*bench_refresh(args.items, args.model, args.repeats),
               *bench_search(tuple(int(s) for s in args.search_sizes.split(","))),
               *bench_query_embedding(args.model)]
    from bench.run import _format

    for name, value in figures:
        print(f"{name}: {_format(value)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
