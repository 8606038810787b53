from __future__ import annotations

import argparse
import json
import sys

HELP = "Embed texts with a model (e.g. the model_uri of a ModelReady event): texts in, vectors out."
DESCRIPTION = (
    "Reads one text per line (or JSON lines with a \"text\" field) from --input or stdin and writes one JSON "
    "line per text: {\"text\": ..., \"vector\": [...]}. --model takes runs:/<run_id>/model, "
    "mlflow-artifacts:/..., or a local SentenceTransformer folder; MLflow URIs are resolved through "
    "ES_MLFLOW_TRACKING_URI."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="URI", help="Model URI or folder.")
    parser.add_argument("--input", default="-", metavar="FILE|-", help="Texts to embed (default: stdin).")
    parser.add_argument("--output", default="-", metavar="FILE|-", help="Where to write vectors (default: stdout).")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tower", choices=("query", "items"), default="query",
                        help="For a model with separate query and item towers: which one embeds (default: query).")
    parser.set_defaults(handler=_embed)


def _embed(args: argparse.Namespace) -> int:
    from schemas.settings import Settings
    from trainer.serving import load_model

    source = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")
    texts = [_text(line) for line in source if line.strip()]
    model = load_model(args.model, Settings().mlflow_tracking_uri, tower=args.tower)
    vectors = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True,
                           show_progress_bar=len(texts) > 1000)
    sink = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    for text, vector in zip(texts, vectors):
        sink.write(json.dumps({"text": text, "vector": [round(float(x), 6) for x in vector]}) + "\n")
    sink.flush()
    return 0


def _text(line: str) -> str:
    line = line.rstrip("\n")
    if line.lstrip().startswith("{"):
        return json.loads(line)["text"]
    return line
