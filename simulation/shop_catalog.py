"""The demo's shop: a product catalog described plainly, and shoppers who search it in slang.

``simulation/data/shop_catalog.json`` holds the vocabulary: categories with a plain item name, a few
product details and two slang terms each, colours and house brands. Items are every category ×
colour × brand; their text is the plain description ("Cairn insulated down jacket in red. 800-fill
goose down..."). Queries use the slang ("red marshmallow from Cairn"), optionally narrowed by a
colour and/or a brand; an item is relevant when its category is the slang's and it has every
attribute the query names. A general-purpose model knows colours and brands but not the slang, so
it is mediocre here; clicks teach it.

The held-out queries (``split``) use the same slang terms in attribute combinations no training
query has, so what they measure is whether the slang was learnt, not whether queries were memorised.
Everything is deterministic: the same file gives the same items, queries and split.

``python -m simulation.shop_catalog DIR`` writes the shop as a BEIR-layout collection (the training
queries as ``qrels_train.tsv``, the held-out ones as ``qrels_test.tsv``), so that the quality bench
measures a product-search collection beside SciFact and Cranfield:
``python -m bench.quality --dataset DIR``.

With ``--plain`` the shoppers name each product as the catalog does ("red insulated down jacket from
Cairn"): the same items, a starting model that is already good, and little left to learn but which
colour and brand the query asked for. It is the other kind of product search the bench must handle: a
small lift to find, where announcing nothing is cheap and announcing a worse model is not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

from simulation.user_simulator import SimQuery

DATA_FILE = "shop_catalog.json"

_TEMPLATES = {
    (False, False): ["{slang}"],
    (True, False): ["{colour} {slang}", "{slang} in {colour}"],
    (False, True): ["{brand} {slang}", "{slang} from {brand}"],
    (True, True): ["{brand} {colour} {slang}", "{colour} {slang} by {brand}"],
}


@dataclass(frozen=True)
class ShopItem:
    object_id: str
    text: str
    category: str
    colour: str
    brand: str


@dataclass(frozen=True)
class ShopQuery:
    query_id: str
    text: str
    slang: str
    category: str
    colour: str | None
    brand: str | None
    relevant: frozenset[str]

    def as_sim_query(self) -> SimQuery:
        return SimQuery(self.query_id, self.text, {object_id: 1.0 for object_id in self.relevant})


class ShopCatalog:
    def __init__(self, data: dict, *, plain: bool = False):
        self.name: str = data["shop"]
        self.plain = plain
        self.colours: list[str] = list(data["colours"])
        self.brands: list[str] = list(data["brands"])
        self.categories: list[dict] = list(data["categories"])

    @cached_property
    def items(self) -> list[ShopItem]:
        items = []
        for category in self.categories:
            for colour in self.colours:
                for number, brand in enumerate(self.brands):
                    detail = category["details"][number % len(category["details"])]
                    text = f"{brand} {category['item']} in {colour}. {detail[0].upper()}{detail[1:]}."
                    items.append(ShopItem(f"sku-{len(items) + 1:04d}", text, category["key"], colour, brand))
        return items

    @cached_property
    def texts(self) -> dict[str, str]:
        return {item.object_id: item.text for item in self.items}

    @cached_property
    def queries(self) -> list[ShopQuery]:
        """Every slang term (or, plain, the item's name) alone, with each colour, with each brand, and with
        each colour and brand."""
        queries = []
        for category in self.categories:
            for slang in [category["item"]] if self.plain else category["slang"]:
                for colour in [None, *self.colours]:
                    for brand in [None, *self.brands]:
                        queries.append(self._query(category["key"], slang, colour, brand))
        return queries

    def _query(self, category: str, slang: str, colour: str | None, brand: str | None) -> ShopQuery:
        key = f"{slang}|{colour or ''}|{brand or ''}"
        templates = _TEMPLATES[(colour is not None, brand is not None)]
        template = templates[_stable_int(key) % len(templates)]
        relevant = frozenset(
            item.object_id for item in self.items
            if item.category == category and colour in (None, item.colour) and brand in (None, item.brand)
        )
        query_id = "q-" + hashlib.sha256(key.encode()).hexdigest()[:10]
        return ShopQuery(query_id, template.format(slang=slang, colour=colour, brand=brand), slang, category,
                         colour, brand, relevant)

    def split(self, *, seed: int = 0) -> tuple[list[ShopQuery], list[ShopQuery]]:
        """(training queries, held-out queries). Per slang term, three combinations are held out: one
        with a colour, one with a brand, one with both; the training queries are all the others."""
        rng = random.Random(f"shop-split:{seed}")
        by_slang: dict[str, list[ShopQuery]] = {}
        for query in self.queries:
            by_slang.setdefault(query.slang, []).append(query)
        held_out: list[ShopQuery] = []
        for slang, queries in by_slang.items():
            for has_colour, has_brand in ((True, False), (False, True), (True, True)):
                kind = [q for q in queries if (q.colour is not None) == has_colour and (q.brand is not None) == has_brand]
                held_out.append(rng.choice(kind))
        held = {q.query_id for q in held_out}
        return [q for q in self.queries if q.query_id not in held], held_out


def load_shop(*, plain: bool = False) -> ShopCatalog:
    """The shop shipped with the project (``simulation/data/shop_catalog.json``); ``plain``: its shoppers
    use the catalog's own names instead of slang."""
    text = resources.files("simulation").joinpath("data", DATA_FILE).read_text(encoding="utf-8")
    return ShopCatalog(json.loads(text), plain=plain)


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def write_beir(shop: ShopCatalog, folder: Path, *, seed: int = 0) -> Path:
    """The shop as a BEIR-layout folder: its items, every query, and the split's two sides as qrels."""
    folder.mkdir(parents=True, exist_ok=True)
    train, held_out = shop.split(seed=seed)
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as out:
        for item in shop.items:
            out.write(json.dumps({"_id": item.object_id, "title": "", "text": item.text}) + "\n")
    with (folder / "queries.jsonl").open("w", encoding="utf-8") as out:
        for query in shop.queries:
            out.write(json.dumps({"_id": query.query_id, "text": query.text}) + "\n")
    for name, side in (("qrels_train.tsv", train), ("qrels_test.tsv", held_out)):
        with (folder / name).open("w", encoding="utf-8") as out:
            out.write("query-id\tcorpus-id\tscore\n")
            for query in side:
                out.writelines(f"{query.query_id}\t{object_id}\t1\n" for object_id in sorted(query.relevant))
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulation.shop_catalog",
                                     description="Write the demo's shop as a BEIR-layout collection for the quality "
                                     "bench (python -m bench.quality --dataset DIR).")
    parser.add_argument("folder", type=Path, help="Folder to write (created; its files are overwritten).")
    parser.add_argument("--plain", action="store_true",
                        help="Shoppers name products as the catalog does, not in slang: a starting model that is "
                        "already good and a small lift to find.")
    args = parser.parse_args(argv)
    shop = load_shop(plain=args.plain)
    train, held_out = shop.split()
    try:
        folder = write_beir(shop, args.folder)
    except OSError as error:
        parser.error(f"cannot write the collection to {args.folder}: {error.strerror or error}")
    print(f"{folder}: {len(shop.items)} items, {len(train)} training and {len(held_out)} held-out queries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
