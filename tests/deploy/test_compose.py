"""docker-compose.yml and deploy/k8s, checked without Docker or a cluster (deploy/Dockerfile: test_images.py)."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import pytest
import yaml

from contracts.topology import SERVICES
from gateway.settings import GatewaySettings
from services.runtime.settings import Settings
from tests.deploy.dockerfile import last, stages

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
K8S_SCHEMAS = K8S_DIR / "schemas"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
INFRASTRUCTURE = ("rabbitmq", "mongodb", "mailpit")

# CATALOG §1 names these variables as every service's configuration; each is a Settings field.
CATALOG_SETTINGS = (
    "amqp_url", "mongodb_url", "smtp_host", "smtp_port", "smtp_username", "smtp_password", "smtp_tls",
    "mail_from", "public_url", "token_secret", "bootstrap_operator_email", "bootstrap_operator_password",
)

# The subset of the Compose specification this repository uses; anything else is a typo.
_DURATION: dict[str, Any] = {"type": "string", "pattern": r"^(\d+(\.\d+)?(us|ms|s|m|h))+$"}
_STRING_OR_LIST: dict[str, Any] = {
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SERVICE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
    "properties": {
        "image": {"type": "string"},
        "pull_policy": {"enum": ["always", "never", "missing", "build"]},
        "profiles": {"type": "array", "items": {"type": "string", "pattern": _NAME}},
        "build": {"oneOf": [
            {"type": "string"},
            {"type": "object", "additionalProperties": False, "required": ["context"],
             "properties": {"context": {"type": "string"}, "dockerfile": {"type": "string"},
                            "target": {"type": "string"}}},
        ]},
        "command": _STRING_OR_LIST,
        "environment": {"oneOf": [
            {"type": "object", "additionalProperties": False,
             "patternProperties": {r"^[A-Za-z_][A-Za-z0-9_]*$": {"type": ["string", "number", "boolean", "null"]}}},
            {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(=.*)?$"}},
        ]},
        "ports": {"type": "array", "items": {
            "type": "string", "pattern": r"^(\d{1,3}(\.\d{1,3}){3}:)?(\d+:)?\d+(/(tcp|udp))?$"}},
        "volumes": {"type": "array", "items": {"type": "string"}},
        "depends_on": {"oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "object", "additionalProperties": False, "patternProperties": {_NAME: {
                "type": "object", "additionalProperties": False, "required": ["condition"],
                "properties": {
                    "condition": {"enum": ["service_started", "service_healthy",
                                           "service_completed_successfully"]},
                    "restart": {"type": "boolean"},
                    "required": {"type": "boolean"},
                }}}},
        ]},
        "healthcheck": {
            "type": "object", "additionalProperties": False, "required": ["test"],
            "properties": {
                "test": _STRING_OR_LIST, "interval": _DURATION, "timeout": _DURATION,
                "start_period": _DURATION, "start_interval": _DURATION,
                "retries": {"type": "integer", "minimum": 1}, "disable": {"type": "boolean"},
            },
        },
        "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
        "stop_grace_period": _DURATION,
        "hostname": {"type": "string"},
        "working_dir": {"type": "string", "pattern": "^/"},
        "container_name": {"type": "string"},
    },
}
COMPOSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["services"],
    "patternProperties": {"^x-": {}},
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]*$"},
        "services": {"type": "object", "minProperties": 1, "additionalProperties": False,
                     "patternProperties": {_NAME: _SERVICE_SCHEMA}},
        "volumes": {"type": "object", "additionalProperties": False,
                    "patternProperties": {_NAME: {"type": ["object", "null"]}}},
    },
}

_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?P<sep>:?-)?(?P<default>[^}]*)\}|\$(?P<bare>\w+)")


@functools.cache
def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return loaded


def _service(name: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    assert name in services, f"{name} is missing from docker-compose.yml"
    return services[name]


def _schema_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(COMPOSE_SCHEMA)
    return sorted(f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
                  for error in validator.iter_errors(document))


def _words(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def _with_defaults(value: str) -> str:
    """The value Compose uses when no variable is set: `${X:-default}` becomes `default`."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        assert match.group("sep"), f"${{{name}}} has no default, so `docker compose up` needs it set"
        return match.group("default")
    return _INTERPOLATION.sub(replace, value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, None) for item in raw)
    return {key: _with_defaults(str(value)) for key, value in raw.items() if value is not None}


def _variable(field: str) -> str:
    return f"PORTAL_{field.upper()}"


def _required_variables() -> set[str]:
    """CATALOG §1's variables, minus the ones whose setting may stay unset (SMTP login)."""
    fields = Settings.model_fields
    assert set(CATALOG_SETTINGS) <= fields.keys(), "a CATALOG §1 variable is no longer a setting"
    return {_variable(name) for name in CATALOG_SETTINGS if fields[name].default is not None}


def _known_variables() -> set[str]:
    return {_variable(name) for name in Settings.model_fields}


@functools.cache
def _manifests() -> tuple[dict[str, Any], ...]:
    documents: list[dict[str, Any]] = []
    for path in sorted([*K8S_DIR.rglob("*.yaml"), *K8S_DIR.rglob("*.yml")]):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return tuple(documents)


def _kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _manifests() if doc.get("kind") == kind}


def _service_module(command: list[str]) -> str | None:
    """`services.metering` for `python -m services.metering`, else None."""
    match command:
        case [python, "-m", module] if python in ("python", "python3", "python3.11"):
            return module
    return None


def test_the_compose_file_follows_the_schema() -> None:
    assert _schema_errors(_compose()) == []


def test_the_schema_rejects_a_misspelt_key() -> None:
    misspelt_service = copy.deepcopy(_compose())
    misspelt_service["services"]["metering"]["enviroment"] = {"PORTAL_SMTP_HOST": "mailpit"}
    misspelt_top_level = copy.deepcopy(_compose())
    misspelt_top_level["volume"] = {}

    assert any("enviroment" in error for error in _schema_errors(misspelt_service))
    assert any("volume" in error for error in _schema_errors(misspelt_top_level))


def _image_command(target: str) -> list[str]:
    """What the image of a Dockerfile target runs: its ENTRYPOINT and CMD."""
    dockerfile = stages(DOCKERFILE)
    assert target in dockerfile, f"deploy/Dockerfile has no target {target}"
    return [*_exec_form(last(dockerfile, target, "ENTRYPOINT")), *_exec_form(last(dockerfile, target, "CMD"))]


def _exec_form(rest: str | None) -> list[str]:
    if rest is None:
        return []
    words = json.loads(rest)
    assert isinstance(words, list), rest
    return [str(word) for word in words]


def _runs(service: dict[str, Any], target: str) -> list[str]:
    """The command a Compose service runs: its own `command`, else its image's."""
    build = service.get("build")
    assert isinstance(build, dict), f"{target} must be built from the repository"
    assert (COMPOSE_FILE.parent / build["context"]).resolve() == ROOT, target
    assert (ROOT / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE, target
    assert build.get("target") == target, f"{target} must be built from its own target, not {build.get('target')}"
    command = _image_command(target)
    if "command" in service:
        command = [*_exec_form(last(stages(DOCKERFILE), target, "ENTRYPOINT")), *_words(service["command"])]
    return command


def test_every_service_is_built_from_its_own_target_and_runs_its_module() -> None:
    images = set()
    for name in SERVICES:
        service = _service(name)
        assert _runs(service, name) == ["python", "-m", f"services.{name}"], name
        assert importlib.util.find_spec(f"services.{name}.__main__") is not None, name
        assert service["image"].split(":")[0] == f"service-portal-{name}", name
        images.add(service["image"])
        # Its health: the image's HEALTHCHECK, not switched off here.
        assert not service.get("healthcheck", {}).get("disable", False), name
        assert last(stages(DOCKERFILE), name, "HEALTHCHECK") not in (None, "NONE"), name
    assert len(images) == len(SERVICES)


def test_the_operators_cli_runs_on_demand_only() -> None:
    admin = _service("admin")
    assert _runs(admin, "admin") == ["portal-admin", "--help"]
    assert admin.get("profiles"), "`docker compose up` must not start the CLI"
    assert urlsplit(_environment(admin)["PORTAL_AMQP_URL"]).hostname == "rabbitmq"


def test_every_service_gets_every_variable_it_needs() -> None:
    required = _required_variables()
    assert {"PORTAL_AMQP_URL", "PORTAL_MONGODB_URL", "PORTAL_TOKEN_SECRET"} <= required
    for name in SERVICES:
        missing = required - _environment(_service(name)).keys()
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_every_variable_a_service_gets_is_a_setting() -> None:
    for name in SERVICES:
        unknown = {key for key in _environment(_service(name)) if key.startswith("PORTAL_")} - _known_variables()
        assert not unknown, f"{name} sets {sorted(unknown)}, which no setting reads"


def test_the_services_accept_their_environment_with_no_variable_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SERVICES:
        for key, value in _environment(_service(name)).items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.smtp_tls == "none", name


def test_the_services_reach_the_broker_the_database_and_the_mail_sink_by_name() -> None:
    mongodb_command = _words(_service("mongodb").get("command", []))
    replica_set = mongodb_command[mongodb_command.index("--replSet") + 1]
    for name in SERVICES:
        environment = _environment(_service(name))
        assert urlsplit(environment["PORTAL_AMQP_URL"]).hostname == "rabbitmq", name
        mongodb_url = urlsplit(environment["PORTAL_MONGODB_URL"])
        assert mongodb_url.hostname == "mongodb", name
        assert parse_qs(mongodb_url.query).get("replicaSet") == [replica_set], name
        assert environment["PORTAL_SMTP_HOST"] == "mailpit", name
        assert environment["PORTAL_SMTP_PORT"] == "1025", name


def test_the_services_wait_for_a_healthy_broker_and_database() -> None:
    for dependency in ("rabbitmq", "mongodb"):
        assert "healthcheck" in _service(dependency), f"{dependency} has no healthcheck"
    for name in SERVICES:
        depends_on = _service(name).get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name} must wait for healthy dependencies"
        for dependency in ("rabbitmq", "mongodb"):
            assert depends_on.get(dependency, {}).get("condition") == "service_healthy", (name, dependency)


def test_every_package_that_runs_is_in_an_image() -> None:
    """Each package pyproject installs reaches some image, except `deploy` (the local stack and the docs writer)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    installed = {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {rest.split()[0].split("/")[0] for stage in stages(DOCKERFILE).values()
              for keyword, rest in stage.instructions if keyword == "COPY" and not rest.startswith("--from")}
    assert installed - copied == {"deploy"}


def test_every_service_can_be_scaled_out() -> None:
    for name in SERVICES:
        service = _service(name)
        assert "container_name" not in service, f"{name} has a fixed container name"
        assert "ports" not in service, f"{name} publishes host ports, so a second replica cannot start"


def test_rabbitmq_mongodb_and_mailpit_are_part_of_the_stack() -> None:
    rabbitmq, mongodb, mailpit = (_service(name) for name in INFRASTRUCTURE)

    assert rabbitmq["image"].startswith("rabbitmq:3.") and rabbitmq["image"].endswith("-management")
    assert {"5672:5672", "15672:15672"} <= set(rabbitmq.get("ports", []))

    assert mongodb["image"].split(":")[0] == "mongo" and mongodb["image"].split(":")[1].startswith("7")
    assert "--replSet" in _words(mongodb.get("command", []))
    assert "rs.initiate" in " ".join(_words(mongodb["healthcheck"]["test"]))

    assert mailpit["image"].split(":")[0] == "axllent/mailpit"
    assert {"1025:1025", "8025:8025"} <= set(mailpit.get("ports", []))


def test_every_deployment_runs_its_own_image() -> None:
    deployments = _kind("Deployment")
    assert set(deployments) == {*SERVICES, "gateway"}
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].split(":")[0] == f"service-portal-{name}", name
        if "command" in container:  # Kubernetes: `command` replaces the image's ENTRYPOINT and CMD
            runs = [*container["command"], *container.get("args", [])]
        else:
            dockerfile = stages(DOCKERFILE)
            runs = [*_exec_form(last(dockerfile, name, "ENTRYPOINT")),
                    *(container.get("args") or _exec_form(last(dockerfile, name, "CMD")))]
        module = _service_module(runs)
        assert module == (name if name == "gateway" else f"services.{name}"), f"Deployment {name} runs {module}"
        assert importlib.util.find_spec(f"{module}.__main__") is not None, module


def test_every_deployment_gets_every_variable_it_needs() -> None:
    sources = {("configMapRef", name): set(doc.get("data", {})) for name, doc in _kind("ConfigMap").items()}
    for name, secret in _kind("Secret").items():
        sources["secretRef", name] = {*secret.get("data", {}), *secret.get("stringData", {})}
    for name, deployment in _kind("Deployment").items():
        if name == "gateway":
            continue  # test_the_gateway_deployment_gets_the_broker_and_its_own_settings
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        variables = {variable["name"] for variable in container.get("env", [])}
        for source in container.get("envFrom", []):
            ((kind, reference),) = source.items()
            assert (kind, reference["name"]) in sources, f"Deployment {name}: no {kind} {reference['name']}"
            variables |= sources[kind, reference["name"]]
        assert not _required_variables() - variables, f"Deployment {name} lacks variables"
        assert not {v for v in variables if v.startswith("PORTAL_")} - _known_variables(), name


def test_every_deployment_scales_on_one_of_its_own_queues() -> None:
    scaled = {doc["spec"]["scaleTargetRef"]["name"]: doc for doc in _kind("ScaledObject").values()}
    authentications = _kind("TriggerAuthentication")
    assert set(scaled) == set(_kind("Deployment")) - {"gateway"}  # no queue of its own: CPU scales it
    for name, scaled_object in scaled.items():
        assert scaled_object["spec"].get("minReplicaCount", 0) >= 1, f"{name} must keep a replica"
        triggers = scaled_object["spec"]["triggers"]
        assert triggers, name
        for trigger in triggers:
            assert trigger["type"] == "rabbitmq", name
            queue = trigger["metadata"]["queueName"]
            assert queue.startswith(f"{name}.") and not queue.endswith(".dlq"), f"{name} scales on {queue}"
            assert trigger["authenticationRef"]["name"] in authentications, name


def test_the_gateway_deployment_gets_the_broker_and_its_own_settings() -> None:
    deployment = _kind("Deployment")["gateway"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    variables = {variable["name"]: variable for variable in container["env"]}
    for source in container.get("envFrom", []):
        variables |= dict.fromkeys(_kind("ConfigMap")[source["configMapRef"]["name"]]["data"], {})
    assert variables["PORTAL_AMQP_URL"]["valueFrom"]["secretKeyRef"]["name"] in _kind("Secret")
    assert "PORTAL_TOKEN_SECRET" not in variables and "PORTAL_MONGODB_URL" not in variables
    assert {"PORTAL_GATEWAY_HOST", "PORTAL_GATEWAY_PORT"} <= {f"PORTAL_{name.upper()}"
                                                              for name in GatewaySettings.model_fields}
    # Readiness on the pod's own state (test_review_ops: one service down must not take every gateway pod out).
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert _kind("Service")["gateway"]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert _kind("HorizontalPodAutoscaler")["gateway"]["spec"]["scaleTargetRef"]["name"] == "gateway"


def test_the_compose_gateway_runs_its_module_on_the_broker_and_publishes_its_port() -> None:
    gateway = _service("gateway")
    assert _runs(gateway, "gateway") == ["python", "-m", "gateway"]
    environment = _environment(gateway)
    assert urlsplit(environment["PORTAL_AMQP_URL"]).hostname == "rabbitmq"
    known = {f"PORTAL_{name.upper()}" for name in GatewaySettings.model_fields}
    assert set(environment) <= known
    assert f"{environment['PORTAL_GATEWAY_PORT']}:8080" in gateway["ports"]
    assert gateway["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


# --- Kubernetes: every manifest against the Kubernetes 1.34 and KEDA schemas shipped in deploy/k8s/schemas ----------

def _schema_file(document: dict[str, Any]) -> Path:
    """kubeconform's naming: `deployment-apps-v1.json`, `service-v1.json`, `scaledobject-keda-v1alpha1.json`."""
    group, _, version = document["apiVersion"].rpartition("/")
    name = "-".join(part for part in (document["kind"].lower(), group.split(".")[0], version) if part)
    return K8S_SCHEMAS / f"{name}.json"


def _check_jsonschema(documents: list[dict[str, Any]], directory: Path) -> tuple[int, str]:
    """check-jsonschema on every document in one process: a schema that hands each document to the shipped
    schema of its apiVersion and kind. Its exit status and output."""
    branches = []
    instances = []
    for index, document in enumerate(documents):
        schema = _schema_file(document)
        assert schema.is_file(), f"no schema shipped for {document['apiVersion']} {document['kind']}"
        branches.append({
            "if": {"required": ["apiVersion", "kind"], "properties": {
                "apiVersion": {"const": document["apiVersion"]}, "kind": {"const": document["kind"]}}},
            "then": {"$ref": schema.resolve().as_uri()},
        })
        instance = directory / f"{index:02d}-{document['kind']}-{document['metadata']['name']}.json"
        instance.write_text(json.dumps(document), encoding="utf-8")
        instances.append(str(instance))
    dispatch = directory / "manifests.schema.json"
    dispatch.write_text(json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema",
                                    "allOf": list({json.dumps(branch, sort_keys=True): branch
                                                   for branch in branches}.values())}))
    executable = Path(sys.executable).parent / "check-jsonschema"
    assert executable.exists(), "check-jsonschema is missing: `pip install -e '.[dev]'` installs it"
    result = subprocess.run([str(executable), "--color", "never", "--schemafile", str(dispatch), *instances],
                            capture_output=True, text=True, timeout=120, check=False)
    return result.returncode, result.stdout + result.stderr


def test_every_manifest_follows_its_kubernetes_or_keda_schema(tmp_path: Path) -> None:
    documents = list(_manifests())
    kinds = {document["kind"] for document in documents}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "HorizontalPodAutoscaler",
            "ScaledObject", "TriggerAuthentication"} <= kinds
    status, output = _check_jsonschema(documents, tmp_path)
    assert status == 0, output
    assert "ok -- validation done" in output


def test_the_schema_check_rejects_misspelt_and_mistyped_fields(tmp_path: Path) -> None:
    deployment = copy.deepcopy(_kind("Deployment")["metering"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["resource"] = container.pop("resources")
    budget = copy.deepcopy(_kind("PodDisruptionBudget")["metering"])
    budget["spec"]["maxUnavailble"] = budget["spec"].pop("maxUnavailable")
    scaled = copy.deepcopy(_kind("ScaledObject")["metering"])
    scaled["spec"]["minReplicas"] = scaled["spec"].pop("minReplicaCount")
    config = copy.deepcopy(_kind("ConfigMap")["portal-config"])
    config["data"]["PORTAL_SMTP_PORT"] = 587  # ConfigMap values are strings

    status, output = _check_jsonschema([deployment, budget, scaled, config], tmp_path)

    assert status == 1
    errors = [line for line in output.splitlines() if "::$" in line]
    for instance, mistake in (("Deployment-metering", "'resource' was unexpected"),
                              ("PodDisruptionBudget-metering", "'maxUnavailble' was unexpected"),
                              ("ScaledObject-metering", "'minReplicas' was unexpected"),
                              ("ConfigMap-portal-config", "587 is not of type 'string'")):
        assert any(instance in line and mistake in line for line in errors), (instance, output)


def test_only_the_schemas_the_manifests_use_are_shipped() -> None:
    shipped = {path.name for path in K8S_SCHEMAS.glob("*.json")}
    assert shipped == {_schema_file(document).name for document in _manifests()}


def _containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def test_every_deployment_has_a_disruption_budget_over_its_pods() -> None:
    budgets = _kind("PodDisruptionBudget")
    for name, deployment in _kind("Deployment").items():
        assert name in budgets, f"Deployment {name} has no PodDisruptionBudget"
        spec = budgets[name]["spec"]
        assert spec["selector"] == deployment["spec"]["selector"], name
        # One pod at a time, and a single replica can still be drained (minAvailable: 1 would block it).
        assert spec.get("maxUnavailable") == 1 and "minAvailable" not in spec, name
    assert set(budgets) == set(_kind("Deployment"))


def test_every_deployment_is_probed_bounded_and_unprivileged() -> None:
    config = _kind("ConfigMap")["portal-config"]["data"]
    for name, deployment in _kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] >= 1000, name
        assert pod.get("automountServiceAccountToken") is False, name
        (container,) = _containers(deployment)
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        mounts = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{name}: a read-only root file system still needs a writable /tmp"
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), name
        assert "memory" in container["resources"]["limits"], name
        for probe in ("readinessProbe", "livenessProbe"):
            assert probe in container, f"Deployment {name} has no {probe}"
        if name != "gateway":  # test_the_gateway_deployment_gets_the_broker_and_its_own_settings
            # The pod's own process answers on the port its metrics are served on: no Python started per probe.
            ports = {port["name"]: port["containerPort"] for port in container["ports"]}
            assert str(ports["metrics"]) == config["PORTAL_METRICS_PORT"], name
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics"}, (name, probe)
            liveness = container["livenessProbe"]
            # A broker outage the services ride out must not restart every pod within a minute.
            assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 180, name
        for probe in ("readinessProbe", "livenessProbe"):
            # The answer comes within the healthcheck's own 5 s (a heartbeat is at most 15 s old).
            assert container[probe].get("timeoutSeconds", 1) >= 5, (name, probe)


def test_the_config_map_holds_no_credentials() -> None:
    secrets = {key for secret in _kind("Secret").values() for key in secret.get("stringData", {})}
    for name, config in _kind("ConfigMap").items():
        data = config.get("data", {})
        assert not set(data) & secrets, name
        for key, value in data.items():
            assert not re.search(r"PASSWORD|SECRET|TOKEN", key), f"{name} holds {key}"
            assert urlsplit(str(value)).password is None, f"{name} holds credentials in {key}"
