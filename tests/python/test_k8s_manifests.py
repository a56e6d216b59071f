"""The Kubernetes manifests of deploy/k8s, without a cluster.

Each kustomization (``base``: Redis Cluster; ``sentinel``: the overlay for Sentinel) is
rendered the way ``kubectl kustomize`` renders it (and compared with kubectl's own output
where kubectl is installed), then

- every object is validated against the Kubernetes OpenAPI schemas bundled in the PyPI
  package ``kubernetes-validate`` (offline, strict: unknown fields are errors), for
  every Kubernetes minor from ``OLDEST_KUBERNETES`` to the newest the package knows; a
  test feeds it broken copies to show that it rejects them;
- what no schema can say is checked against the gateway itself: readiness on
  ``/readyz`` at the port ``WSGATE_LISTEN`` names, the drain timing rule (preStop wait +
  ``--shutdown-timeout-ms`` + exit margin within ``terminationGracePeriodSeconds``), the
  memory sizing rule from the measured memory per connection, selectors that match the
  pods, ClientIP affinity, every ``WSGATE_`` variable a flag of ``config.rs``, secrets
  only by reference, one Redis topology per rendering;
- the real binary is started with the environment a pod would get (Redis addresses
  pointed at a closed loopback port), must accept it, stays under the memory baseline
  the sizing rule assumes, and exits within the shutdown budget after SIGTERM.

The rules are written down in docs/operations.md, "Kubernetes".
"""

from __future__ import annotations

import copy
import functools
import http.client
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
GATEWAY_SRC = REPO / "crates" / "gateway" / "src"
RENDERINGS = {"base": K8S / "base", "sentinel": K8S / "sentinel"}

#: The oldest Kubernetes the manifests are meant for (policy/v1 PDBs with
#: ``unhealthyPodEvictionPolicy``, ``seccompProfile``): every minor from it to the
#: newest schema bundled in kubernetes-validate is checked.
OLDEST_KUBERNETES = (1, 29)

# --- the rules of docs/operations.md, "Kubernetes" --------------------------------------

#: Memory of one idle joined connection, charged to the pod: 8.74 KiB of gateway RSS
#: (docs/benchmarks.md, "Round 2, issue 17") and up to 8.7 KiB of kernel socket memory
#: (the same measurement's Slab; cgroup v2 charges it to the container), rounded up.
PER_CONNECTION_KIB = 20
#: The process with no connection: measured 7.7 MiB (release) and 15 MiB (debug) on
#: Redis; ``test_the_gateway_takes_the_pod_environment`` holds the binary to it.
BASELINE_MIB = 32
#: The request is the rule's figure rounded up to a multiple of this.
ROUND_MIB = 64
#: Between the end of ``--shutdown-timeout-ms`` and the process's exit: the last
#: deregistration from Redis and the exit itself.
EXIT_MARGIN_S = 5
#: How long an endpoint removal may take to reach every kube-proxy and ingress
#: controller: the least preStop wait.
MIN_PRESTOP_S = 5
#: A pod's name is "<deployment>-<pod-template-hash (up to 10)>-<5 characters>", and it
#: is the node id, which may be 32 characters long.
NODE_ID_MAX = 32


# --- rendering ----------------------------------------------------------------------------


def load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> None:
    """Applies RFC 6902 ``add``, ``replace`` and ``remove`` operations in place."""
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        assert parts, f"a patch of the whole document: {op}"
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            index = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(index, copy.deepcopy(op["value"]))
            elif kind == "replace":
                parent[index] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[index]
            else:
                raise AssertionError(f"unsupported patch operation {kind}")
        else:
            if kind in ("replace", "remove"):
                assert last in parent, f"{op['path']}: nothing to {kind}"
            if kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[last]
            else:
                raise AssertionError(f"unsupported patch operation {kind}")


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def matches(obj: dict[str, Any], target: dict[str, Any]) -> bool:
    group_version = obj["apiVersion"].split("/")
    group, version = (group_version if len(group_version) == 2 else ["", group_version[0]])
    return (
        target.get("kind", obj["kind"]) == obj["kind"]
        and target.get("name", obj["metadata"]["name"]) == obj["metadata"]["name"]
        and target.get("version", version) == version
        and target.get("group", group) == group
    )


def render_dir(directory: Path) -> list[dict[str, Any]]:
    """What ``kubectl kustomize DIRECTORY`` renders, for the features these
    kustomizations use (anything else fails here rather than being ignored)."""
    (k,) = load_all(directory / "kustomization.yaml")
    unknown = set(k) - {"apiVersion", "kind", "resources", "images", "patches"}
    assert not unknown, f"{directory}: this renderer does not know {sorted(unknown)}"
    objs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        objs += render_dir(path) if path.is_dir() else load_all(path)
    for image in k.get("images", []):
        for obj in objs:
            for c in containers(obj):
                if re.split(r"[:@]", c["image"], maxsplit=1)[0] == image["name"]:
                    c["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for patch in k.get("patches", []):
        assert set(patch) == {"path", "target"}, f"unsupported patch form {patch}"
        (ops,) = load_all(directory / patch["path"])
        assert isinstance(ops, list), f"{patch['path']}: a JSON 6902 patch is a list"
        targets = [o for o in objs if matches(o, patch["target"])]
        assert targets, f"{patch['path']} patches nothing"
        for obj in targets:
            json_patch(obj, ops)
    return objs


@functools.lru_cache(maxsize=None)
def _rendered(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(render_dir(RENDERINGS[name]))


def rendered(name: str) -> list[dict[str, Any]]:
    """A fresh copy of one rendering (tests may change what they get)."""
    return copy.deepcopy(list(_rendered(name)))


def only(objs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"{len(found)} objects of kind {kind}"
    return found[0]


def gateway_container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (c,) = only(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def pod_env(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The gateway container's environment as a pod gets it: the ConfigMaps of
    ``envFrom`` in order, then ``env`` (a literal value, or its ``valueFrom``)."""
    c = gateway_container(objs)
    maps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    env: dict[str, Any] = {}
    for source in c.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"envFrom names the ConfigMap {name}, which is not rendered"
        env.update(maps[name].get("data", {}))
    for var in c.get("env", []):
        env[var["name"]] = var["value"] if "value" in var else {"valueFrom": var["valueFrom"]}
    return env


# --- the gateway's flags ------------------------------------------------------------------


def flags_source() -> str:
    """The gateway's flag definitions: config.rs and the modules of config/."""
    files = [GATEWAY_SRC / "config.rs", *sorted((GATEWAY_SRC / "config").glob("**/*.rs"))]
    return "\n".join(f.read_text() for f in files if f.exists())


def flag_env_names() -> set[str]:
    return set(re.findall(r'env\s*=\s*"(WSGATE_[A-Z0-9_]+)"', flags_source()))


def flag_default(name: str) -> int:
    pattern = rf'env\s*=\s*"{name}"[^\]]*?default_value(?:_t)?\s*=\s*"?([0-9_]+)"?'
    m = re.search(pattern, flags_source())
    assert m, f"no numeric default for {name} in config.rs"
    return int(m.group(1).replace("_", ""))


def setting(objs: list[dict[str, Any]], name: str) -> int:
    """A numeric setting in effect in the pod: its variable, else the flag's default."""
    value = pod_env(objs).get(name)
    assert not isinstance(value, dict), f"{name} is not a literal"
    return int(value) if value is not None else flag_default(name)


def quantity(q: str | int) -> float:
    """A Kubernetes quantity (``256Mi``, ``500m``, ``1G``) as a number."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    assert m, f"not a quantity: {q}"
    units = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return float(m.group(1)) * units[m.group(2)]


def prestop_sleep_s(container: dict[str, Any]) -> int:
    hook = container["lifecycle"]["preStop"]
    if "sleep" in hook:
        return int(hook["sleep"]["seconds"])
    command = hook["exec"]["command"]
    assert Path(command[0]).name == "sleep" and len(command) == 2, f"not a sleep: {command}"
    return int(command[1])


# --- schema validation --------------------------------------------------------------------


def minor(version: str) -> tuple[int, int]:
    major, mnr = version.split(".")[:2]
    return int(major), int(mnr)


VERSIONS = sorted(
    {f"{minor(v)[0]}.{minor(v)[1]}.0" for v in all_versions() if minor(v) >= OLDEST_KUBERNETES},
    key=minor,
)


def schema_errors(obj: dict[str, Any], version: str) -> list[str]:
    """Why ``obj`` fails the strict schema of ``version`` (empty: it passes). A kind
    without a schema is a failure, not a warning."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
        return []
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        return [f"{obj['kind']}/{obj['metadata']['name']} {path}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [e.message]


def test_the_bundled_schemas_reach_the_oldest_version() -> None:
    assert VERSIONS and minor(VERSIONS[0]) == OLDEST_KUBERNETES, VERSIONS


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_every_object_passes_the_strict_schema(name: str, version: str) -> None:
    objs = rendered(name)
    assert {o["kind"] for o in objs} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    errors = [err for obj in objs for err in schema_errors(obj, version)]
    assert not errors, "\n".join(errors)


def test_the_validator_rejects_broken_copies() -> None:
    """The check above can fail: broken copies of the Deployment and the Service."""
    version = VERSIONS[-1]
    objs = rendered("base")
    deployment = only(objs, "Deployment")
    service = only(objs, "Service")
    assert schema_errors(deployment, version) == [] and schema_errors(service, version) == []

    def broken(obj: dict[str, Any], change) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        change(obj)
        return obj

    def misspelt(d: dict[str, Any]) -> None:
        c = d["spec"]["template"]["spec"]["containers"][0]
        c["readinesProbe"] = c.pop("readinessProbe")

    def port_as_text(d: dict[str, Any]) -> None:
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"

    def no_selector(d: dict[str, Any]) -> None:
        del d["spec"]["selector"]

    def probe_without_port(d: dict[str, Any]) -> None:
        del d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"]

    def affinity_timeout_as_text(s: dict[str, Any]) -> None:
        s["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] = "3h"

    cases = {
        "unknown field readinesProbe": broken(deployment, misspelt),
        "containerPort a string": broken(deployment, port_as_text),
        "no spec.selector": broken(deployment, no_selector),
        "httpGet without port": broken(deployment, probe_without_port),
        "affinity timeout a string": broken(service, affinity_timeout_as_text),
    }
    accepted = [what for what, obj in cases.items() if not schema_errors(obj, version)]
    assert not accepted, f"the validator accepted: {accepted}"


def test_every_manifest_file_is_rendered() -> None:
    """No YAML file under deploy/k8s escapes the checks: each is a kustomization, a
    patch one names, or a resource one lists."""
    covered: set[Path] = set()
    for directory in RENDERINGS.values():
        covered.add(directory / "kustomization.yaml")
    for path in K8S.rglob("kustomization.yaml"):
        assert path.parent in RENDERINGS.values(), f"{path} is not checked"
        (k,) = load_all(path)
        for res in k.get("resources", []):
            target = (path.parent / res).resolve()
            assert target.exists(), f"{path} lists {res}, which does not exist"
            covered.add(target / "kustomization.yaml" if target.is_dir() else target)
        for patch in k.get("patches", []):
            covered.add((path.parent / patch["path"]).resolve())
    files = {p.resolve() for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml")}
    assert files - covered == set(), f"not rendered: {sorted(files - covered)}"


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_kubectl_kustomize_renders_the_same(name: str) -> None:
    """The renderer above against kustomize itself (kubectl's), where it is installed."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the rendering is checked by the other tests only")
    out = subprocess.run(
        [kubectl, "kustomize", str(RENDERINGS[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    theirs = sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=key)
    assert theirs == sorted(rendered(name), key=key)


# --- what the schema cannot say -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_probes_and_ports_are_the_gateways(name: str) -> None:
    objs = rendered(name)
    c = gateway_container(objs)
    listen = pod_env(objs)["WSGATE_LISTEN"]
    host, port = listen.rsplit(":", 1)
    assert host == "0.0.0.0", f"WSGATE_LISTEN {listen}: a pod must listen on every interface"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": int(port)}, ports

    def resolve(p: str | int) -> int:
        return ports[p] if isinstance(p, str) else p

    ready = c["readinessProbe"]["httpGet"]
    assert ready["path"] == "/readyz" and resolve(ready["port"]) == int(port)
    live = c["livenessProbe"]["httpGet"]
    assert live["path"] == "/healthz" and resolve(live["port"]) == int(port)
    # Liveness must not kill a pod that is merely busy or draining: it gives up later
    # than a drain lasts.
    liveness_s = c["livenessProbe"]["periodSeconds"] * c["livenessProbe"]["failureThreshold"]
    assert liveness_s >= setting(objs, "WSGATE_SHUTDOWN_TIMEOUT_MS") / 1000, liveness_s
    service = only(objs, "Service")
    (sport,) = service["spec"]["ports"]
    assert resolve(sport["targetPort"]) == int(port)
    annotations = only(objs, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/port", port) == port
    assert annotations.get("prometheus.io/path", "/metrics") == "/metrics"


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_the_drain_fits_the_grace_period(name: str) -> None:
    objs = rendered(name)
    deployment = only(objs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    wait = prestop_sleep_s(gateway_container(objs))
    shutdown_ms = setting(objs, "WSGATE_SHUTDOWN_TIMEOUT_MS")
    spread_ms = setting(objs, "WSGATE_DRAIN_SPREAD_MS")
    window_ms = setting(objs, "WSGATE_RECONNECT_WINDOW_MS")
    assert wait >= MIN_PRESTOP_S, f"preStop waits {wait} s: too short for endpoint removal"
    # The gateway holds the spread to half the shutdown timeout: a larger setting
    # would not mean what it says.
    assert spread_ms <= shutdown_ms // 2, (spread_ms, shutdown_ms)
    needed = wait + math.ceil(shutdown_ms / 1000) + EXIT_MARGIN_S
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= needed, f"terminationGracePeriodSeconds {grace} < preStop + shutdown + margin"
    # A rolling update drains the next old pod only once the previous one's clients
    # are back: a new pod stays "ready" for minReadySeconds before it counts.
    settle = wait + math.ceil((spread_ms + window_ms) / 1000)
    assert deployment["spec"].get("minReadySeconds", 0) >= settle, settle
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_the_selectors_match_the_pods(name: str) -> None:
    objs = rendered(name)
    deployment = only(objs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    pdb = only(objs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == {"matchLabels": selector}, "the PDB must count these pods"
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]
    assert pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow"
    assert only(objs, "Service")["spec"]["selector"].items() <= labels.items()
    for spread in deployment["spec"]["template"]["spec"].get("topologySpreadConstraints", []):
        assert spread["labelSelector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_the_service_keeps_a_client_on_one_pod(name: str) -> None:
    spec = only(rendered(name), "Service")["spec"]
    assert spec["sessionAffinity"] == "ClientIP"
    assert spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] > 0


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_every_variable_is_a_flag_of_the_gateway(name: str) -> None:
    objs = rendered(name)
    known = flag_env_names()
    assert "WSGATE_LISTEN" in known, "config.rs parsed wrongly"
    used = {k for k in pod_env(objs) if k.startswith("WSGATE_")}
    for cm in (o for o in objs if o["kind"] == "ConfigMap"):
        used |= set(cm.get("data", {}))
    # And the keys the files show commented out, as examples to turn on.
    for path in K8S.rglob("*.yaml"):
        used |= set(re.findall(r"^\s*#\s*(WSGATE_[A-Z0-9_]+):", path.read_text(), re.M))
    unknown = sorted(used - known)
    assert not unknown, f"not a variable of any flag in config.rs: {unknown}"
    # Every ConfigMap rendered is one the pods read.
    c = gateway_container(objs)
    read = {s["configMapRef"]["name"] for s in c["envFrom"]}
    assert read == {o["metadata"]["name"] for o in objs if o["kind"] == "ConfigMap"}
    # Kubernetes' service variables (WSGATE_PORT, WSGATE_SERVICE_HOST, … for the
    # Service `wsgate`) would land in the gateway's own namespace of variables.
    assert only(objs, "Deployment")["spec"]["template"]["spec"]["enableServiceLinks"] is False


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_secrets_only_by_reference(name: str) -> None:
    objs = rendered(name)
    assert not [o for o in objs if o["kind"] == "Secret"], "a Secret's values in the repository"
    env = pod_env(objs)
    for var in ("WSGATE_JWT_SECRET", "WSGATE_API_KEY"):
        ref = env.get(var)
        assert isinstance(ref, dict) and "secretKeyRef" in ref["valueFrom"], f"{var}: {ref!r}"
        assert ref["valueFrom"]["secretKeyRef"].get("optional", False) is False, (
            f"{var} optional: a pod without it would run in development mode or without API key"
        )
    for cm in (o for o in objs if o["kind"] == "ConfigMap"):
        for key in cm.get("data", {}):
            assert not re.search(r"SECRET|API_KEY|PASSWORD|TOKEN", key), f"{key} in a ConfigMap"


def host_ports(value: str) -> list[tuple[str, int]]:
    out = []
    for entry in value.split(","):
        m = re.fullmatch(r"(?:redis://)?([a-z0-9]([a-z0-9.-]*[a-z0-9])?):([0-9]+)", entry)
        assert m, f"not host:port: {entry!r}"
        port = int(m.group(3))
        assert 0 < port < 65536, entry
        out.append((m.group(1), port))
    return out


def test_redis_cluster_is_the_default_and_sentinel_the_overlay() -> None:
    topology = {
        "WSGATE_REDIS_URL",
        "WSGATE_REDIS_CLUSTER_NODES",
        "WSGATE_REDIS_SENTINELS",
        "WSGATE_REDIS_MASTER_NAME",
    }
    base = {k: v for k, v in pod_env(rendered("base")).items() if k in topology}
    assert set(base) == {"WSGATE_REDIS_CLUSTER_NODES"}, base
    assert len(host_ports(base["WSGATE_REDIS_CLUSTER_NODES"])) >= 3
    sentinel = {k: v for k, v in pod_env(rendered("sentinel")).items() if k in topology}
    assert set(sentinel) == {"WSGATE_REDIS_SENTINELS", "WSGATE_REDIS_MASTER_NAME"}, sentinel
    assert len(host_ports(sentinel["WSGATE_REDIS_SENTINELS"])) >= 3
    assert re.fullmatch(r"[A-Za-z0-9._-]+", sentinel["WSGATE_REDIS_MASTER_NAME"])
    # The overlay changes nothing else.
    strip = lambda objs: [o for o in objs if o["metadata"]["name"] != "wsgate-redis"]  # noqa: E731
    assert strip(rendered("sentinel")) == strip(rendered("base"))


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_resources_are_sized_from_the_measured_memory(name: str) -> None:
    objs = rendered(name)
    resources = gateway_container(objs)["resources"]
    connections = setting(objs, "WSGATE_MAX_CONNECTIONS")
    rule = BASELINE_MIB * 2**20 + connections * PER_CONNECTION_KIB * 2**10
    sized = math.ceil(rule / (ROUND_MIB * 2**20)) * ROUND_MIB * 2**20
    request = quantity(resources["requests"]["memory"])
    assert request == sized, (
        f"memory request {resources['requests']['memory']}: the rule gives "
        f"{sized / 2**20:.0f}Mi for {connections} connections"
    )
    assert quantity(resources["limits"]["memory"]) >= 2 * request
    assert quantity(resources["requests"]["cpu"]) > 0
    assert "cpu" not in resources.get("limits", {}), "a CPU limit throttles heartbeats"


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_pods_name_their_nodes_and_run_the_image(name: str) -> None:
    objs = rendered(name)
    deployment = only(objs, "Deployment")
    dname = deployment["metadata"]["name"]
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", dname)
    assert len(dname) + 1 + 10 + 1 + 5 <= NODE_ID_MAX, f"pod names of {dname} can exceed a node id"
    node_id = pod_env(objs)["WSGATE_NODE_ID"]
    assert node_id == {"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    c = gateway_container(objs)
    version = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)
    assert version and c["image"].endswith(f":{version.group(1)}"), c["image"]
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    # The image's user (deploy/Dockerfile), by number.
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    uid = re.search(r"useradd --system --uid ([0-9]+)", dockerfile)
    assert uid and security["runAsUser"] == int(uid.group(1))


# --- the real binary with the pod's environment ---------------------------------------------


def gateway_binary() -> Path:
    env = os.environ.get("WSGATE_BIN")
    path = Path(env) if env else REPO / "target" / "debug" / "wsgate"
    if not path.exists():
        raise RuntimeError(f"{path} is missing: cargo build -p wsgate-gateway, or set WSGATE_BIN")
    return path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("name", sorted(RENDERINGS))
def test_the_gateway_takes_the_pod_environment(name: str) -> None:
    """The binary with exactly the variables a pod gets (secrets made up, the pod name
    as Kubernetes forms it, every Redis address a closed loopback port, the listener on
    loopback): it starts, answers /healthz, holds less than the baseline the memory rule
    assumes, and exits 0 within the shutdown timeout + margin after SIGTERM."""
    objs = rendered(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGATE_")}
    dead = f"127.0.0.1:{closed_port()}"
    deployment_name = only(objs, "Deployment")["metadata"]["name"]
    for var, value in pod_env(objs).items():
        if isinstance(value, dict):
            source = value["valueFrom"]
            if "secretKeyRef" in source:
                value = secrets.token_hex(16)
            elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                value = f"{deployment_name}-5d8f7c9b6d-x2x7k"
            else:
                raise AssertionError(f"{var}: no test value for {source}")
        elif var in ("WSGATE_REDIS_CLUSTER_NODES", "WSGATE_REDIS_SENTINELS"):
            value = ",".join(dead for _ in host_ports(value))
        elif var == "WSGATE_REDIS_URL":
            value = f"redis://{dead}"
        elif var == "WSGATE_LISTEN":
            value = "127.0.0.1:0"
        env[var] = value
    proc = subprocess.Popen(
        [str(gateway_binary())],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        line = proc.stdout.readline()
        assert line.startswith("wsgate listening on "), f"{line!r}; stderr: {''.join(err)[-3000:]}"
        host, port = line.split()[-1].rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        for _ in range(20):
            conn.request("GET", "/healthz")
            res = conn.getresponse()
            res.read()
            assert res.status == 200
        conn.close()
        rss = rss_kib(proc.pid)
        assert rss < BASELINE_MIB * 1024, f"idle RSS {rss} KiB over the {BASELINE_MIB} MiB baseline"
        budget = setting(objs, "WSGATE_SHUTDOWN_TIMEOUT_MS") / 1000 + EXIT_MARGIN_S
        started = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=budget + 10)
        took = time.monotonic() - started
        assert code == 0, f"exit {code}; stderr: {''.join(err)[-3000:]}"
        assert took <= budget, f"exited {took:.1f} s after SIGTERM, over {budget} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=5)
        proc.stdout.close()
        proc.stderr.close()
