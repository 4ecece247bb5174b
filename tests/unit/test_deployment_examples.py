"""The shipped platform examples (Kubernetes, ECS) are well formed and wire the agent up as documented."""

from __future__ import annotations

import tomllib
from pathlib import Path

from agent.cli.main import build_parser
from agent.config import load_settings
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


def test_daemonset_serves_the_node_through_a_host_socket(tmp_path: Path) -> None:
    """DaemonSet: valid config, socket in the hostPath apps mount, apps known by uid or Secret token, no shared one."""
    import yaml

    docs = [doc for doc in yaml.safe_load_all((CONFIG / "kubernetes" / "daemonset.yaml").read_text()) if doc]
    by_kind = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    daemonset = by_kind[("DaemonSet", "secrets-agent")]["spec"]["template"]["spec"]
    agent = next(c for c in daemonset["containers"] if c["name"] == "secrets-agent")
    tokens = by_kind[("Secret", "secrets-agent-tokens")]["stringData"]
    text = by_kind[("ConfigMap", "secrets-agent")]["data"]["agent.toml"]
    # The token files the config names live in the Secret's mount: check them against a copy of the Secret.
    token_mount = next(m["mountPath"] for m in agent["volumeMounts"] if m["name"] == "agent-tokens")
    for key, value in tokens.items():
        (tmp_path / key).write_text(value)
        (tmp_path / key).chmod(0o440)
    socket_path = tomllib.loads(text)["server"]["unix_socket"]
    socket_dir = str(Path(socket_path).parent)
    # Loaded here with the token files and socket directory in tmp_path (the loader checks they exist).
    local = text.replace(f"file://{token_mount}/", f"file://{tmp_path}/").replace(socket_path, str(tmp_path / "s"))
    settings = load_settings(str(write(tmp_path / "agent.toml", local)), environ={})
    assert settings.auth.token is None  # no shared token on a node shared by many apps
    assert settings.server.unix_socket_mode == 0o666 and settings.events.sns_topic_arn
    assert all(client.uid is not None or client.token is not None for client in settings.clients)
    assert {client.token.location for client in settings.clients if client.token} <= {
        str(tmp_path / key) for key in tokens
    }
    host_dir = next(v for v in daemonset["volumes"] if v["name"] == "agent-run")["hostPath"]["path"]
    assert {"name": "agent-run", "mountPath": socket_dir} in agent["volumeMounts"]
    assert agent["securityContext"]["runAsNonRoot"] and agent["securityContext"]["readOnlyRootFilesystem"]
    assert all("exec" in agent[probe] for probe in ("startupProbe", "livenessProbe", "readinessProbe"))
    # The example app mounts the same host directory read-only and runs as a uid a client is recognised by.
    app = by_kind[("Deployment", "billing")]["spec"]["template"]["spec"]
    assert next(v for v in app["volumes"] if v["name"] == "secrets-agent")["hostPath"]["path"] == host_dir
    mount = next(m for m in app["containers"][0]["volumeMounts"] if m["name"] == "secrets-agent")
    assert mount["readOnly"] and mount["mountPath"] == socket_dir
    assert app["securityContext"]["runAsUser"] in {client.uid for client in settings.clients}
    # Orphans of killed agents are swept on a schedule, on the topic the agents use, by the CLI's own flags.
    sweep = by_kind[("CronJob", "secrets-agent-sweep")]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    args = build_parser().parse_args(sweep["containers"][0]["args"])
    assert args.command == "sweep-queues" and args.topic_arn == [settings.events.sns_topic_arn] and args.config is None


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
