from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

HELP = "Run an embedded Kafka-compatible broker (tansu, in memory) in the foreground until Ctrl-C."
DESCRIPTION = (
    "Starts tansu on a free loopback port (or --port), creates the registry's topics (ES_TOPIC_PREFIX, "
    "ES_CLICKSTREAM_PARTITIONS) unless --no-topics, prints the bootstrap address and runs until Ctrl-C or "
    "SIGTERM. Everything is kept in memory and lost when it stops."
)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, help="Listen on this port (default: a free one).")
    parser.add_argument("--log", type=Path, metavar="FILE", help="Broker log (default: <ES_DATA_DIR>/logs/broker.log).")
    parser.add_argument("--no-topics", action="store_true", help="Do not create the registry's topics.")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from embedding_studio.embedded.broker import TansuBroker
    from messaging.topics import ensure_topics
    from schemas.settings import Settings

    settings = Settings()
    # SIGTERM (systemd, a supervisor, `kill`) stops the broker the same way as Ctrl-C. SIGINT gets the
    # handler too: a process started from a background job inherits SIGINT ignored, and Python then
    # installs no handler of its own, so Ctrl-C (or `kill -INT`) would be lost.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    broker = TansuBroker(port=args.port, log_path=args.log or settings.data_dir / "logs" / "broker.log")
    try:
        with broker:
            if not args.no_topics:
                ensure_topics(broker.bootstrap, settings.topics(), settings.replication_factor)
            print(f"broker ready: {broker.bootstrap}   (log: {broker.log_path})")
            print(f"  export ES_KAFKA_BOOTSTRAP={broker.bootstrap}")
            print("Ctrl-C stops it; its data lives in memory only.", flush=True)
            code = broker.wait()
    except KeyboardInterrupt:
        print("broker stopped", flush=True)
        return 0
    print(f"broker exited unexpectedly with code {code}; see {broker.log_path}", file=sys.stderr)
    return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
