"""What the message pipelines and the handlers reach of a running service copy.

`ServiceInstance` (service.py) is the one implementation; commands.py and events.py name only
this protocol, so neither imports the module that imports them.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from faststream.rabbit import RabbitBroker, RabbitMessage

from services.runtime.batching import Lookups
from services.runtime.claims import ClaimStore
from services.runtime.metrics import Metrics
from services.runtime.mongo import Database
from services.runtime.outbox import OutboxRelay
from services.runtime.revocations import RevocationStore
from services.runtime.settings import Settings

S = TypeVar("S", bound=Settings)


class Instance(Protocol):
    name: str  # the service's
    settings: Settings
    db: Database
    broker: RabbitBroker
    claims: ClaimStore
    revocations: RevocationStore
    # Reads by `_id` of the handlers running at once, batched per collection.
    lookups: Lookups
    relay: OutboxRelay
    metrics: Metrics
    # Each queue of the service and the routing key that binds it.
    queues: dict[str, str]
    # What startup hooks prepare for the handlers of this process.
    state: dict[str, Any]
    ready: bool

    async def reply(self, msg: RabbitMessage, reply: dict[str, Any]) -> None: ...

    def settings_as(self, kind: type[S]) -> S: ...
