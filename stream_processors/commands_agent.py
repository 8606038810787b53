"""The commands agent: forwards ``release_batch`` commands to the batcher, dead-letters unreadable ones.

Every other command is the trainer's; nothing an operator sends may stop the worker.
"""

from __future__ import annotations

import faust

from schemas.base import ContractError, utc_now
from schemas.dead_letters import dead_letter_headers
from schemas.tasks import ReleaseBatch, parse_task_command
from stream_processors.batcher_records import BATCHER_KEY, ReleaseRequested, encode
from stream_processors.counters import StreamCounters


class CommandsAgent:
    def __init__(self, *, sessions_topic: faust.TopicT, commands_dlq: faust.TopicT, metrics: StreamCounters) -> None:
        self.sessions_topic = sessions_topic
        self.commands_dlq = commands_dlq
        self.metrics = metrics

    async def process(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            try:
                command = parse_task_command(message.value or b"")
            except Exception as error:  # nothing an operator sends may stop the worker
                reason = error.reason if isinstance(error, ContractError) else f"{type(error).__name__}: {error}"
                self.metrics.batcher["commands_dead_lettered"] += 1
                headers = dead_letter_headers(reason, message.topic, message.partition, message.offset)
                sent = await self.commands_dlq.send(key=message.key, value=message.value, headers=headers, force=True)
                await sent
                continue
            if isinstance(command, ReleaseBatch):
                self.metrics.batcher["releases_received"] += 1
                forward = ReleaseRequested(
                    release_id=command.release_id, command_id=command.command_id, requested_at=utc_now()
                )
                sent = await self.sessions_topic.send(key=BATCHER_KEY, value=encode(forward), force=True)
                await sent
