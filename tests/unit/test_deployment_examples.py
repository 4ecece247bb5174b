"""The shipped platform examples (Kubernetes, ECS) are well formed and wire the agent up as documented."""

from __future__ import annotations

from tests.support.paths import CONFIG


def test_platform_examples_are_well_formed() -> None:
    """The Kubernetes pod runs the agent as a native sidecar gated on /readyz; ECS waits for HEALTHY."""
    import json

    import yaml

    root = CONFIG
    docs = list(yaml.safe_load_all((root / "kubernetes" / "pod.yaml").read_text()))
    pod = next(doc for doc in docs if doc["kind"] == "Pod")
    sidecar = next(c for c in pod["spec"]["initContainers"] if c["name"] == "secrets-agent")
    assert sidecar["restartPolicy"] == "Always"
    # exec, not httpGet: the kubelet probes the pod IP, and the agent listens on loopback only.
    assert "http://127.0.0.1:2773/readyz" in " ".join(sidecar["startupProbe"]["exec"]["command"])
    assert "httpGet" not in sidecar["livenessProbe"] and "httpGet" not in sidecar["readinessProbe"]
    run = next(v for v in pod["spec"]["volumes"] if v["name"] == "agent-run")
    assert run["emptyDir"]["medium"] == "Memory"
    account = next(doc for doc in docs if doc["kind"] == "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    task = json.loads((root / "ecs" / "task-definition.json").read_text())
    app = next(c for c in task["containerDefinitions"] if c["name"] == "app")
    assert {"containerName": "secrets-agent", "condition": "HEALTHY"} in app["dependsOn"]
