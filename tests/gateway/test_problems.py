"""Refusals as problem details in the request's language; 503 with Retry-After when no service answers."""

from __future__ import annotations

import httpx

from deploy.local.deps import free_port
from gateway.settings import GatewaySettings
from services.runtime.service import ServiceInstance
from tests.builders import sign_up
from tests.gateway.conftest import gateway


async def test_an_unauthenticated_request_is_a_problem_in_the_requests_language(
        http: httpx.AsyncClient, accounts: ServiceInstance) -> None:
    german = await http.get("/api/v1/me", headers={"Accept-Language": "de-DE,de;q=0.9"})
    english = await http.get("/api/v1/me", headers={"Accept-Language": "fr, en;q=0.5"})

    for response in (german, english):
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "unauthenticated"
        assert response.json()["type"] == "urn:portal:problem:unauthenticated"
        assert response.json()["status"] == 401
    assert german.json()["message"] == "Bitte melden Sie sich erneut an."
    assert german.headers["content-language"] == "de"
    assert english.json()["message"] == "Please sign in again."


async def test_bad_fields_are_422_with_each_field_named(http: httpx.AsyncClient, accounts: ServiceInstance) -> None:
    response = await http.post("/api/v1/users", json={"email": "not an address"}, headers={"Accept-Language": "de"})

    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert problem["message"] == "Einige Felder fehlen oder sind ungültig."
    assert {"email", "password", "accept_terms"} <= set(problem["fields"])


async def test_a_domain_refusal_is_409_with_the_catalogue_code(http: httpx.AsyncClient,
                                                                accounts: ServiceInstance) -> None:
    person = sign_up()
    assert (await http.post("/api/v1/users", json=person)).status_code == 201

    again = await http.post("/api/v1/users", json={**person, "username": person["username"] + "x"},
                            headers={"Accept-Language": "nb"})

    assert again.status_code == 409
    assert again.json()["code"] == "email_taken"
    assert again.json()["message"].startswith("Det finnes allerede en konto")


async def test_a_body_that_is_not_a_json_object_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/v1/users", content=b"[1, 2]", headers={"Content-Type": "application/json"})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_message"


async def test_no_service_answering_is_503_with_retry_after(http: httpx.AsyncClient) -> None:
    # The broker is up, but no service declared the command's queue in this vhost.
    response = await http.get("/api/v1/me", headers={"Authorization": "Bearer x"})

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["code"] == "service_unavailable"


async def test_a_broker_that_is_down_is_503_with_retry_after() -> None:
    settings = GatewaySettings(amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    async with gateway(settings) as http:
        response = await http.post("/api/v1/session", json={"login": "a", "password": "b"},
                                   headers={"Accept-Language": "de"})
        health = await http.get("/healthz")
        ready = await http.get("/readyz")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["message"].startswith("Der Dienst ist im Moment nicht erreichbar")
    assert health.status_code == 200  # the process itself is alive: no restart would help
    assert ready.status_code == 503  # but it takes no traffic
    assert set(ready.json()["fields"]) == {"accounts", "registration", "metering", "ordering", "ticketing", "notifier"}


async def test_ready_names_the_services_that_do_not_answer(http: httpx.AsyncClient, accounts: ServiceInstance) -> None:
    response = await http.get("/readyz")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert set(response.json()["fields"]) == {"registration", "metering", "ordering", "ticketing", "notifier"}


async def test_an_unknown_service_has_no_dead_letters(http: httpx.AsyncClient) -> None:
    response = await http.get("/api/v1/operator/services/nosuch/dead-letters", headers={"Authorization": "Bearer x"})

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_an_unknown_path_or_verb_is_a_problem_too(http: httpx.AsyncClient) -> None:
    unknown = await http.get("/api/v1/nothing-here", headers={"Accept-Language": "de"})
    wrong_verb = await http.put("/api/v1/orders")

    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["message"] == "Nicht gefunden."
    assert wrong_verb.status_code == 405
    assert wrong_verb.json()["code"] == "method_not_allowed"
    assert wrong_verb.headers["allow"] == "GET, POST"  # every verb of the path, not only its first route's


async def test_an_unexpected_failure_is_a_500_problem_that_names_nothing_internal() -> None:
    async with gateway(GatewaySettings(amqp_url="not-a-url")) as http:  # the client raises ValueError on it
        response = await http.get("/api/v1/me", headers={"Authorization": "Bearer x", "Accept-Language": "de"})

    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "internal"
    assert response.json()["message"].startswith("Bei uns ist ein Fehler aufgetreten")
    assert "not-a-url" not in response.text
