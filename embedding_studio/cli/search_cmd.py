from __future__ import annotations

import argparse

HELP = "Search the served index version from the shell; says which model and version answered."


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="The search query.")
    parser.add_argument("-k", type=int, default=10, help="How many results (default 10).")
    parser.add_argument("--json", action="store_true", help="One JSON object instead of a table.")
    parser.set_defaults(handler=_search)


def _search(args: argparse.Namespace) -> int:
    import json

    from index.base import NoServedVersion
    from index.factory import IndexLocked, open_index
    from index.search import SearchService
    from schemas.settings import Settings

    settings = Settings()
    try:
        index = open_index(settings)
    except IndexLocked as error:
        raise SystemExit(f"search: {error}") from None
    with index:
        try:
            service = SearchService(index, settings.mlflow_tracking_uri, settings.embed_precision)
            answer = service.search(args.query, args.k)
        except NoServedVersion as error:
            print(f"search: {error}")
            return 1
    version = answer.version
    if args.json:
        print(json.dumps({"query": args.query, "version": version.version, "model_uri": version.model_uri,
                          "results": [{"object_id": h.object_id, "score": h.score, "text": h.text}
                                      for h in answer.hits]}))
        return 0
    print(f"answered by index v{version.version} ({version.item_count} items), model {version.model_uri}")
    for rank, hit in enumerate(answer.hits, start=1):
        text = hit.text if len(hit.text) <= 80 else hit.text[:77] + "..."
        print(f"{rank:>3}. {hit.score:.3f}  {hit.object_id}  {text}")
    return 0
