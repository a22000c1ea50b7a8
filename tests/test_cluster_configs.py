"""The cluster configs in cluster/: the launcher configs valid against the schema shipped
inside the installed `ray` package, the KubeRay manifest against Kubernetes' own schemas
(kubernetes-validate) and KubeRay's fields (cluster/schema/kuberay-v1.json), and all set up
the way a search on them needs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
LAUNCHERS = ["ray-cluster.yaml", "aws.yaml", "gcp.yaml"]
VENV_RAY = "~/automl-rl/.venv/bin/ray"


def _load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_passes_rays_schema(name):
    """As `ray up` does: the provider's defaults filled in, then the schema checked."""
    validate_config(prepare_config(_load(name)))  # raises jsonschema.ValidationError


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_node_gets_the_project_and_starts_its_own_ray(name):
    config = _load(name)
    assert config["file_mounts"] == {"~/automl-rl": "."}  # the project, from `ray up`'s root
    assert ".venv" in config["rsync_exclude"]
    for role in ("head", "worker"):
        setup = " ".join(config.get("setup_commands", []) + config[f"{role}_setup_commands"])
        assert re.search(r"-e ~/automl-rl|make \.venv/bin/\.installed", setup), setup
        torch_index = "whl/cpu" if role == "head" else "whl/cu126"
        assert torch_index in setup  # CUDA torch on the GPU workers only
        commands = config[f"{role}_start_ray_commands"]
        ray_calls = re.findall(r"(\S*ray) (?:start|stop)\b", " ".join(commands))
        assert ray_calls and set(ray_calls) == {VENV_RAY}, commands  # no bare `ray stop`


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_cloud_configs_have_a_cpu_head_and_autoscaling_gpu_workers(name):
    config = _load(name)
    types = config["available_node_types"]
    head = config["head_node_type"]
    assert types[head]["resources"] == {"CPU": 0}  # children train on the workers
    workers = [t for n, t in types.items() if n != head]
    assert len(workers) == 1
    assert workers[0]["min_workers"] == 0 < workers[0]["max_workers"] <= config["max_workers"]
    gpu = str(workers[0]["node_config"])
    assert re.search(r"g5\.|guestAccelerators", gpu)
    server = " ".join(config["head_start_ray_commands"])
    assert "mlflow server" in server and "--allowed-hosts" in server


def test_kuberay_pods_reach_an_mlflow_server_that_accepts_their_host_name():
    """The Ray pods' tracking URI names the manifest's own MLflow Service, and the server
    allows that host name (else every API call is refused with 403)."""
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay-cluster.yaml").read_text()))
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert {d["metadata"]["namespace"] for d in docs} == {"automl"}
    ray_cluster = by_kind[("RayCluster", "automl")]["spec"]
    pods = [ray_cluster["headGroupSpec"]] + ray_cluster["workerGroupSpecs"]
    uris = {
        e["value"]
        for pod in pods
        for c in pod["template"]["spec"]["containers"]
        for e in c["env"]
        if e["name"] == "MLFLOW_TRACKING_URI"
    }
    assert len(uris) == 1 and len(pods) == len(ray_cluster["workerGroupSpecs"]) + 1
    host_port = uris.pop().removeprefix("http://")
    service, namespace = host_port.split(":")[0].split(".")[:2]
    port = int(host_port.split(":")[1])
    spec = by_kind[("Service", service)]["spec"]
    assert namespace == "automl" and spec["ports"][0]["port"] == port
    server = by_kind[("Deployment", service)]["spec"]["template"]
    assert spec["selector"].items() <= server["metadata"]["labels"].items()
    args = server["spec"]["containers"][0]["args"]
    allowed = next(a for a in args if a.startswith("--allowed-hosts=")).split("=", 1)[1]
    assert host_port in allowed.split(",")
    head = ray_cluster["headGroupSpec"]["template"]["spec"]
    assert head["volumes"][0]["persistentVolumeClaim"]["claimName"] in {
        name for kind, name in by_kind if kind == "PersistentVolumeClaim"
    }


def test_the_image_copies_every_package_the_project_installs():
    """A package left out of the image fails only on the cluster, at import."""
    import tomllib

    root = CLUSTER.parent
    found = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {p.rstrip("*") for p in found["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\S+) \./", (CLUSTER / "Dockerfile").read_text(), re.M))
    assert packages <= copied, packages - copied


def test_the_rayjob_runs_a_search_the_command_accepts_on_that_cluster():
    """The RayJob's entrypoint parses as `automl search` options, targets the manifest's
    RayCluster, and keeps its state on the head's corpus volume."""
    import shlex

    from automl.cli import build_parser

    docs = list(yaml.safe_load_all((CLUSTER / "kuberay-cluster.yaml").read_text()))
    job = next(d for d in docs if d["kind"] == "RayJob")
    cluster = next(d for d in docs if d["kind"] == "RayCluster")
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    program, *argv = shlex.split(job["spec"]["entrypoint"])
    assert program == "automl"
    args = build_parser().parse_args(argv)
    assert args.address == "auto" and args.max_wait is not None
    assert args.storage.startswith("/data/") and args.data.startswith("compare:/data/")


KUBERNETES = "1.33"  # the oldest Kubernetes minor the manifest is checked against
KUBERAY_SCHEMA = json.loads((CLUSTER / "schema" / "kuberay-v1.json").read_text())


def _manifest() -> list[dict]:
    return list(yaml.safe_load_all((CLUSTER / "kuberay-cluster.yaml").read_text()))


def _pod_templates(doc: dict) -> list[dict]:
    spec = doc["spec"]
    ray_cluster = spec.get("rayClusterSpec", spec) if doc["kind"] == "RayJob" else spec
    groups = [ray_cluster.get("headGroupSpec"), *ray_cluster.get("workerGroupSpecs", [])]
    templates = [g["template"] for g in groups if g]
    return templates + ([spec["submitterPodTemplate"]] if "submitterPodTemplate" in spec else [])


def _check(doc: dict) -> None:
    """Kubernetes' own objects against Kubernetes' schemas (strict: unknown fields fail);
    KubeRay's against cluster/schema/kuberay-v1.json, their pod templates against
    Kubernetes' PodTemplate schema."""
    import jsonschema
    import kubernetes_validate

    if not doc["apiVersion"].startswith("ray.io/"):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        return
    jsonschema.Draft202012Validator(KUBERAY_SCHEMA).validate(doc)
    for template in _pod_templates(doc):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}}
        kubernetes_validate.validate({**wrapped, "template": template}, KUBERNETES, strict=True)


@pytest.mark.parametrize(
    "kind", ["PersistentVolumeClaim", "Deployment", "Service", "RayCluster", "RayJob"]
)
def test_kuberay_manifest_passes_the_kubernetes_and_kuberay_schemas(kind):
    docs = [d for d in _manifest() if d["kind"] == kind]
    assert docs
    for doc in docs:
        _check(doc)


def _set(doc: dict, path: str, value) -> dict:
    """A copy of ``doc`` with the field at ``path`` (dots; list indices) set."""
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return doc


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("RayCluster", "spec.workerGroupSpecs.0.minReplica", 0),  # misspelt KubeRay field
        ("RayCluster", "spec.headGroupSpec.rayStartParams.num-cpus", 0),  # must be a string
        ("RayCluster", "spec.headGroupSpec.serviceType", "Internal"),
        ("RayCluster", "spec.workerGroupSpecs.0.template.spec.containers.0.imagee", "x"),
        ("RayCluster", "spec.headGroupSpec.template.spec.volumes.0.persistentVolume", {}),
        ("RayJob", "spec.submissionMode", "Batch"),
        ("RayJob", "spec.rayClusterSpec", {"headGroupSpec": {"template": {"spec": {}}}}),
        ("Deployment", "spec.template.spec.containers.0.args", "--port=5000"),
        ("Service", "spec.ports.0.prot", 5000),
    ],
)
def test_the_schemas_refuse_what_the_cluster_would_refuse(kind, path, value):
    """The checks above can fail: one wrong field each, as users get them wrong."""
    import jsonschema
    import kubernetes_validate

    doc = next(d for d in _manifest() if d["kind"] == kind)
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        _check(_set(doc, path, value))


def test_the_kuberay_cluster_runs_the_images_ray_and_scales_gpu_workers_from_zero():
    docs = {d["kind"]: d for d in _manifest()}
    spec = docs["RayCluster"]["spec"]
    base = re.search(r"^FROM rayproject/ray:([\d.]+)-", (CLUSTER / "Dockerfile").read_text(), re.M)
    assert base and spec["rayVersion"] == base.group(1)  # KubeRay starts the image's Ray
    (gpu,) = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == gpu["replicas"] == 0 < gpu["maxReplicas"]
    assert spec["enableInTreeAutoscaling"] is True
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
