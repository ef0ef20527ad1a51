"""How the Kubernetes schemas here were made (run by hand, never by the tests or the services):

    pip download --no-deps kubernetes-validate==1.37.0 && unzip kubernetes_validate-*.whl
    python deploy/k8s/schemas/standalone.py kubernetes_validate/kubernetes-json-schema/v1.34.0-local-strict \
        deploy/k8s/schemas deployment-apps-v1 service-v1 configmap-v1 secret-v1 \
        poddisruptionbudget-policy-v1 horizontalpodautoscaler-autoscaling-v2

Each schema of kubernetes-validate's `local-strict` set refers to `_definitions.json`; this writes it
standalone, with just the definitions it reaches under its own `$defs` and without the descriptions.
The KEDA schemas are datreeio/CRDs-catalog's `keda.sh/{scaledobject,triggerauthentication}_v1alpha1.json`,
copied unchanged.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def standalone(schema: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    reached: dict[str, Any] = {}

    def rewrite(node: Any) -> Any:
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if not isinstance(node, dict):
            return node
        result = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and "#/$defs/" in value:
                name = value.split("#/$defs/", 1)[1]
                if name not in reached:
                    reached[name] = None  # taken before descending: definitions refer to themselves
                    reached[name] = rewrite(definitions[name])
                result[key] = f"#/$defs/{name}"
            elif key == "description" and isinstance(value, str):
                continue  # documentation only
            else:
                result[key] = rewrite(value)
        return result

    bundled: dict[str, Any] = rewrite(schema)
    bundled["$defs"] = dict(sorted(reached.items()))
    return bundled


def main(source: Path, target: Path, names: list[str]) -> None:
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    for name in names:
        bundled = standalone(json.loads((source / f"{name}.json").read_text()), definitions)
        (target / f"{name}.json").write_text(json.dumps(bundled, separators=(",", ":"), sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
