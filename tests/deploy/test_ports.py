"""Ports chosen for local servers never collide within one process."""

from __future__ import annotations

import socket

from deploy.local.deps import claim_port, free_port


def test_a_thousand_free_ports_are_all_different() -> None:
    # The OS offers a just-probed port again; without remembering them, 1,000 picks repeat one
    # with near certainty (birthday bound over ~28,000 ephemeral ports).
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


def test_a_default_port_handed_out_already_or_in_use_is_not_claimed_again() -> None:
    handed_out = free_port()
    assert not claim_port(handed_out)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not claim_port(listener.getsockname()[1])


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_a_free_default_port_is_claimed_once() -> None:
    # The OS may offer a port this process handed out in an earlier test: take the first it did not.
    port = next(port for port in (unused_port() for _ in range(100)) if claim_port(port))
    assert not claim_port(port)
    assert port not in {free_port() for _ in range(200)}
