"""The round trips: the raw aio-pika echo (the baseline) beside the runtime's floor and three commands end to end.

Each server is its own process: the raw echo (`bench.server raw`: a durable queue on the topic exchange, prefetch 32,
the least a consumer can do to answer over the same wire) and the metering, ordering and ticketing services, each
with its database on the run's nx-27017. Each command is validated, written, its event published through the outbox
and answered: `metering.submit_reading` (`bench.metering`), `ordering.place_order` (`bench.ordering`) and
`ticketing.open_ticket` (`bench.ticketing`). All three keep a read model of devices from
`registration.device.provisioned`, so each takes in the others' devices too; the rounds begin once every one is in.
The floor is `bench.write` (`bench.service`): a command of the runtime whose handler writes one document and
nothing else. The same raw client (`bench.client`) drives them all, alternating cell by
cell (`bench.rounds`): raw, runtime, raw, metering, raw, ordering, raw, ticketing, at c=1 then c=32, `repeats` times.

Goal, per command and concurrency: at least 0.5x the baseline's calls/s and a p99 within 2x the baseline's, medians.
"""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import ExitStack

from bench.metering import submit_reading
from bench.ordering import place_order
from bench.plan import Plan
from bench.rounds import Rounds, Subject, interleave
from bench.server import launched
from bench.service import write_once
from bench.ticketing import open_ticket
from bench.world import World, drained
from contracts.registration import DeviceProvisioned
from contracts.topology import event_queue


def run_roundtrip(world: World, plan: Plan) -> Rounds:
    with ExitStack() as stack:
        raw = Subject.raw(stack.enter_context(launched("raw", world.amqp_url)))
        subjects = [stack.enter_context(write_once(world)),
                    stack.enter_context(submit_reading(world, plan.submit_devices)),
                    stack.enter_context(place_order(world, plan.order_devices)),
                    stack.enter_context(open_ticket(world, plan.ticket_devices))]

        async def measure() -> Rounds:
            started = time.monotonic()
            await asyncio.gather(*(prepare() for _, prepare in subjects))
            # All three keep devices: each takes in the others' too, which must be done before anything is measured.
            await drained(world.amqp_url, [event_queue(service, DeviceProvisioned.routing_key)
                                           for service in ("metering", "ordering", "ticketing")])
            print(f"  services seeded in {time.monotonic() - started:.0f} s", flush=True)
            return await interleave(world.amqp_url, [[raw, subject] for subject, _ in subjects], plan.concurrencies,
                                    plan.repeats, plan.seconds, plan.warmup,
                                    {"nx": world.nx_pid, "client": os.getpid()})

        return asyncio.run(measure())
