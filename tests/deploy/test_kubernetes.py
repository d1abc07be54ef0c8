"""Kubernetes manifests validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict),
the GPU overlay rendered by kustomize where kubectl is installed, and the KServe InferenceService checked
as what KServe makes of it: its predictor is a PodSpec plus KServe's own fields."""

from __future__ import annotations

import copy
import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import ROOT, tool

KUBERNETES = ROOT / "deploy" / "kubernetes"
KUSTOMIZE_BASE, KUSTOMIZE_GPU = KUBERNETES / "base", KUBERNETES / "overlays" / "gpu"
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# The fields an InferenceService predictor adds to its inline PodSpec (ComponentExtensionSpec and the
# model-server specs), from KServe's v1beta1 PredictorSpec.
KSERVE_PREDICTOR_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType", "autoScaling",
    "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher", "labels", "annotations",
    "deploymentStrategy", "storageUris", "model", "workerSpec",
}


def load_all(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate_strictly(resource: dict) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(resource, version, strict=True)


def base_resources() -> dict[str, dict]:
    resources = {}
    for path in sorted((KUBERNETES / "base").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in load_all(path.read_text()):
                resources[doc["kind"]] = doc
    return resources


def kustomize(directory) -> dict[str, dict]:
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the kustomize overlay is not rendered here")
    rendered = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True).stdout
    return {doc["kind"]: doc for doc in load_all(rendered)}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env(spec: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in spec.get("env", [])}


@pytest.mark.parametrize("kind", ["Deployment", "Service", "HorizontalPodAutoscaler"])
def test_base_manifests_are_valid(kind):
    validate_strictly(base_resources()[kind])


def test_validation_is_strict():
    """A misspelt field is an error, not silently dropped."""
    deployment = copy.deepcopy(base_resources()["Deployment"])
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strictly(deployment)


def test_deployment_probes_resources_and_security():
    deployment = base_resources()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    spec = container(deployment)
    assert spec["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert spec["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert spec["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"},
                             {"name": "grpc", "containerPort": 8081, "protocol": "TCP"}]
    assert set(spec["resources"]) == {"requests", "limits"}
    assert spec["resources"]["requests"]["cpu"] == spec["resources"]["limits"]["cpu"]
    security = spec["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert env(spec)["ORTSERVE_PROVIDERS"] == "cpu" and spec["image"] == "ortserve:cpu"


def test_service_and_autoscaler_point_at_the_deployment():
    resources = base_resources()
    deployment, service, hpa = resources["Deployment"], resources["Service"], resources["HorizontalPodAutoscaler"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}


def test_rendered_base_and_gpu_overlay_are_valid_and_apart():
    cpu, gpu = kustomize(KUSTOMIZE_BASE), kustomize(KUSTOMIZE_GPU)
    for resource in [*cpu.values(), *gpu.values()]:
        validate_strictly(resource)
    gpu_labels = gpu["Deployment"]["spec"]["template"]["metadata"]["labels"]
    cpu_labels = cpu["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert not cpu["Service"]["spec"]["selector"].items() <= gpu_labels.items(), "the CPU service must not select GPU pods"
    assert gpu["Service"]["spec"]["selector"].items() <= gpu_labels.items()
    assert not gpu["Service"]["spec"]["selector"].items() <= cpu_labels.items()
    assert gpu["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == gpu["Deployment"]["metadata"]["name"] == "ortserve-gpu"


def test_gpu_overlay_asks_for_a_gpu_node_and_cuda():
    deployment = kustomize(KUSTOMIZE_GPU)["Deployment"]
    pod, spec = deployment["spec"]["template"]["spec"], container(deployment)
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert env(spec)["ORTSERVE_PROVIDERS"] == "cuda" and spec["image"] == "ortserve:gpu"
    # what the overlay does not touch stays as in the base: probes and the security context
    base = container(base_resources()["Deployment"])
    for field in ("livenessProbe", "readinessProbe", "startupProbe", "securityContext"):
        assert spec[field] == base[field]


def inference_service() -> dict:
    (doc,) = load_all((KUBERNETES / "kserve" / "inferenceservice.yaml").read_text())
    return doc


def predictor_as_pod(isvc: dict) -> dict:
    """The PodSpec KServe builds from the predictor: its own fields taken out, the rest a core/v1 PodSpec."""
    predictor = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in KSERVE_PREDICTOR_FIELDS}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": isvc["metadata"]["name"]}, "spec": predictor}


def test_inference_service_shape():
    isvc = inference_service()
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert set(isvc["spec"]) == {"predictor"}
    validate_strictly(predictor_as_pod(isvc))


def test_inference_service_speaks_v2_on_port_8000():
    (spec,) = inference_service()["spec"]["predictor"]["containers"]
    assert spec["name"] == "kserve-container"
    assert env(spec)["PROTOCOL"] == "v2"  # how KServe learns a custom container's protocol
    assert [p["containerPort"] for p in spec["ports"]] == [8000]
    assert spec["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8000}
    assert spec["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": 8000}
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True


def test_inference_service_check_catches_a_misplaced_field():
    isvc = inference_service()
    isvc["spec"]["predictor"]["protocolVersion"] = "v2"  # valid only under predictor.model, not for a container
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strictly(predictor_as_pod(isvc))
