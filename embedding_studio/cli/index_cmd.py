from __future__ import annotations

import argparse

HELP = "Inspect and operate the search index: versions, refresh with a model, roll back."
DESCRIPTION = (
    "`index status` lists the versions (the served one marked), `index refresh --model URI` embeds the catalog "
    "with a model into a new version and serves it when complete (what the indexer does for a ModelReady), "
    "`index rollback` serves the previous complete version again. Works on ES_MILVUS_URI, or the Milvus Lite "
    "database under ES_DATA_DIR (while `embedding-studio up` runs, export the ES_MILVUS_URI it printed)."
)


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("status", help="Every version; the served one marked with *.").set_defaults(handler=_status)
    refresh = actions.add_parser("refresh", help="Embed the catalog with a model into a new version and serve it.")
    refresh.add_argument("--model", required=True, metavar="URI",
                         help="runs:/RUN/model (from a ModelReady), models:/…, or a SentenceTransformer folder.")
    refresh.set_defaults(handler=_refresh)
    actions.add_parser("rollback", help="Serve the previous complete version again.").set_defaults(handler=_rollback)


def _open():
    from index.factory import IndexLocked, open_index
    from schemas.settings import Settings

    settings = Settings()
    try:
        return settings, open_index(settings)
    except IndexLocked as error:
        raise SystemExit(f"index: {error}") from None


def _status(args: argparse.Namespace) -> int:
    settings, index = _open()
    with index:
        served = index.served()
        versions = index.versions()
        if not versions:
            print(f"index {settings.index_name!r}: no versions yet")
        for version in versions:
            mark = "*" if served is not None and served.version == version.version else " "
            state = "complete" if version.complete else "incomplete"
            print(f"{mark} v{version.version:<4} {state:<10} {version.item_count:>8} items  "
                  f"{version.created_at:%Y-%m-%d %H:%M:%S}  {version.model_uri}")
    return 0


def _refresh(args: argparse.Namespace) -> int:
    from index.indexer import item_loader
    from index.refresh import IndexRefresher, RefreshFailed

    settings, index = _open()
    with index:
        def show(progress) -> None:
            print(f"  {progress.done}/{progress.total} items ({progress.done / max(progress.seconds, 1e-6):.0f}/s)",
                  flush=True)

        refresher = IndexRefresher(index, item_loader(settings), settings.mlflow_tracking_uri,
                                   settings.index_batch_size, settings.embed_precision, on_progress=show)
        try:
            result = refresher.refresh(args.model)
        except RefreshFailed as error:
            print(f"refresh failed, served version unchanged: {error}")
            return 1
        print(f"v{result.version.version} served: {result.version.item_count} items in {result.seconds:.1f} s "
              f"(previous: {'v%d' % result.previous.version if result.previous else 'none'})")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from index.base import NoServedVersion

    _, index = _open()
    with index:
        try:
            target = index.rollback()
        except NoServedVersion as error:
            print(f"rollback refused: {error}")
            return 1
        print(f"v{target.version} served again ({target.item_count} items, model {target.model_uri})")
    return 0
