"""When traces are exported (the OTEL_* variables), and that the contracts stay on OpenTelemetry's API alone."""

from __future__ import annotations

import subprocess
import sys

from contracts.tracing import exporters_wanted, service_name


def test_nothing_is_exported_without_an_endpoint() -> None:
    assert exporters_wanted({}) == []
    assert exporters_wanted({"OTEL_TRACES_EXPORTER": "otlp"}) == []
    assert exporters_wanted({"OTEL_SERVICE_NAME": "accounts"}) == []


def test_an_otlp_endpoint_turns_tracing_on() -> None:
    assert exporters_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert exporters_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}) == ["otlp"]


def test_the_standard_switches_turn_it_off_again() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert exporters_wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"}) == []
    assert exporters_wanted({**endpoint, "OTEL_SDK_DISABLED": "true"}) == []
    assert exporters_wanted({**endpoint, "OTEL_SDK_DISABLED": "false"}) == ["otlp"]


def test_the_console_exporter_needs_no_endpoint_and_unknown_ones_are_ignored() -> None:
    assert exporters_wanted({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert exporters_wanted({"OTEL_TRACES_EXPORTER": "zipkin"}) == []
    assert exporters_wanted({"OTEL_TRACES_EXPORTER": "console, otlp",
                             "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp", "console"]


def test_the_service_name_is_the_process_s_own_unless_otel_service_name_says_otherwise() -> None:
    assert service_name("accounts", {}) == "accounts"
    assert service_name("accounts", {"OTEL_SERVICE_NAME": "portal-accounts"}) == "portal-accounts"
    assert service_name("accounts", {"OTEL_SERVICE_NAME": " "}) == "accounts"


def test_the_client_loads_no_opentelemetry_sdk() -> None:
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, contracts.client, gateway.app; "
                               "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.')))"],
        capture_output=True, text=True, check=True).stdout
    assert "opentelemetry.trace" in loaded
    assert "opentelemetry.sdk" not in loaded and "opentelemetry.exporter" not in loaded
