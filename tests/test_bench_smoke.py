"""`python -m bench --quick`: every part of the benchmark runs end to end, so the harness cannot rot unnoticed.

A smoke run, not a measurement: it checks that each part measured what it says (calls accepted and their events
published, files and imports processed, reminders and mails out) and wrote latest.json, not how fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.plan import QUICK
from bench.rounds import BASELINE
from bench.run import PARTS

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "runtime: bench.write"  # publishes no event
COMMANDS = ("metering.submit_reading", "ordering.place_order", "ticketing.open_ticket")
SUBJECTS = (FLOOR, *COMMANDS)


def run_quick(results: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """The quick run as a process group; interrupted (so it removes its vhost, database and processes), then killed,
    when it hangs."""
    process = subprocess.Popen([sys.executable, "-m", "bench", "--quick", "--results", str(results)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"python -m bench --quick did not finish within {timeout:g} s:\n{output}")
    return subprocess.CompletedProcess(process.args, process.returncode, output)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    results = tmp_path_factory.mktemp("bench") / "latest.json"
    finished = run_quick(results)
    assert finished.returncode == 0, finished.stdout
    return finished.stdout, json.loads(results.read_text())


def test_the_quick_run_records_the_machine_and_every_part(quick_run: tuple[str, dict[str, Any]]) -> None:
    output, results = quick_run
    assert results["cpus"] == os.cpu_count()
    assert results["python"].startswith("3.11")
    assert results["git_commit"]
    assert results["quick"] is True
    assert set(results["results"]) == set(PARTS)
    assert "total" in results["seconds"]
    assert f"on {os.cpu_count()} cores" in output
    assert "total" in output.splitlines()[-1]


def test_every_command_is_measured_beside_the_baseline_and_each_accepted_call_published_its_event(
        quick_run: tuple[str, dict[str, Any]]) -> None:
    roundtrip = quick_run[1]["results"]["roundtrip"]
    measured = {(series["name"], series["concurrency"]): series for series in roundtrip["series"]}
    for name in (BASELINE, *SUBJECTS):
        for concurrency in QUICK.concurrencies:
            series = measured[name, concurrency]
            assert len(series["cells"]) >= QUICK.repeats
            assert series["errors"] == 0, series
            assert series["calls_per_s"]["min"] <= series["calls_per_s"]["median"] <= series["calls_per_s"]["max"]
    assert {(ratio["name"], ratio["concurrency"]) for ratio in roundtrip["ratios"]} == {
        (name, concurrency) for name in SUBJECTS for concurrency in QUICK.concurrencies}
    for name in COMMANDS:
        events = roundtrip["events"][name]
        assert events["accepted"] > 0
        assert events["events"] == events["accepted"]


def test_the_replicas_bulk_reminder_and_mail_parts_did_their_work(quick_run: tuple[str, dict[str, Any]]) -> None:
    results = quick_run[1]["results"]
    assert [series["name"].split()[0] for series in results["replicas"]["series"]] == [
        str(count) for count in sorted(set(QUICK.replicas))]
    assert all(series["errors"] == 0 for series in results["replicas"]["series"])
    assert "2-core" in results["replicas"]["note"]

    bulk = results["bulk"]
    assert bulk["readings_file"]["accepted"] == [QUICK.file_devices] * QUICK.repeats  # one reading per device
    assert bulk["readings_file"]["events_missing"] == 0
    assert bulk["excel"]["processed"] == [QUICK.registration_rows] * QUICK.repeats
    assert bulk["excel"]["missing"] == 0  # every upload's result mail arrived
    assert bulk["import"]["processed"] == [QUICK.import_devices] * QUICK.repeats
    assert bulk["import"]["missing"] == 0

    reminders = results["reminders"]
    assert reminders["events"] == reminders["recipients"] == reminders["reminders"] > 0
    assert reminders["devices_listed"] == reminders["devices"]

    assert results["mail"]["received"] == [QUICK.mails] * QUICK.repeats


def test_the_gateway_part_measured_both_commands_over_http_beside_portal_client(
        quick_run: tuple[str, dict[str, Any]]) -> None:
    gateway = quick_run[1]["results"]["gateway"]
    measured = {(series["name"], series["concurrency"]): series for series in gateway["series"]}
    names = {"PortalClient: registration.list_devices", "HTTP: GET /api/v1/devices",
             "PortalClient: metering.submit_reading", "HTTP: POST /api/v1/devices/{device_id}/readings"}
    assert set(measured) == {(name, concurrency) for name in names for concurrency in QUICK.concurrencies}
    for series in measured.values():
        assert len(series["cells"]) == QUICK.repeats
        assert series["errors"] == 0, series
        assert series["calls_per_s"]["median"] > 0
    assert {(ratio["command"], ratio["concurrency"]) for ratio in gateway["ratios"]} == {
        (command, concurrency) for command in ("registration.list_devices", "metering.submit_reading")
        for concurrency in QUICK.concurrencies}
    submitted = gateway["events"]["metering.reading.submitted"]
    assert submitted["accepted"] > 0
    assert submitted["events"] == submitted["accepted"]  # every reading accepted over HTTP was stored and announced
