"""The autoscaling overlays, checked without a cluster: KEDA's ScaledObject (overlays/keda) and an HPA on
per-pod custom metrics served by prometheus-adapter (overlays/custom-metrics).

Core resources are validated strictly against the Kubernetes schemas, the ScaledObject's HPA behaviour as
the HPA KEDA makes of it; the ScaledObject and the adapter's rules, which have no schema there, against strict
schemas written from KEDA's and prometheus-adapter's Go types (tests/deploy/schemas/); every PromQL query
asks only for metrics and labels the service declares. Each check returns the problems it finds, so the last
tests show each one finding them in a broken copy."""

from __future__ import annotations

import copy
import json
import os
import re
from typing import Callable
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy.conftest import SCHEMAS
from tests.deploy.promql import KUBERNETES_TARGET_LABELS, declared, metric_names, problems
from tests.deploy.test_kubernetes import KUBERNETES, base_resources, container, kustomize, load_all, validate_strictly

KEDA = KUBERNETES / "overlays" / "keda"
CUSTOM_METRICS = KUBERNETES / "overlays" / "custom-metrics"
GPU = KUBERNETES / "overlays" / "gpu"
LOAD_GAUGES = {"ortserve_queued_rows", "ortserve_inflight_requests"}  # shared per pod: AverageValue targets
QUEUE_WAIT = "ortserve_queue_duration_seconds_bucket"  # a latency: a Value target (KEDA only)
POD_NAME_TAIL = "-7c9d8f6b5d-x4k2p"  # what a Deployment adds to its name: <pod-template-hash>-<suffix>
MAX_QUEUE_ROWS = Settings.model_fields["max_queue_rows"].default
REQUEST_TIMEOUT_S = Settings.model_fields["request_timeout_s"].default


def scaled_object() -> dict:
    (doc,) = load_all((KEDA / "scaledobject.yaml").read_text())
    return doc


def adapter_config_map() -> dict:
    (doc,) = load_all((CUSTOM_METRICS / "prometheus-adapter-rules.yaml").read_text())
    return doc


def adapter_config(config_map: dict) -> dict:
    return yaml.safe_load(config_map["data"]["config.yaml"])


def custom_metrics_hpa() -> dict:
    """The base HPA with the overlay's patch applied, as kustomize does for these fields: metrics (a list
    without merge key) and behaviour are the patch's."""
    (patch,) = load_all((CUSTOM_METRICS / "hpa-custom-metrics.yaml").read_text())
    hpa = copy.deepcopy(base_resources()["HorizontalPodAutoscaler"])
    hpa["spec"].update(patch["spec"])
    return hpa


def triggers_by_metric(so: dict) -> dict[str, dict]:
    """The service metric each trigger asks for -> the trigger."""
    found = {}
    for trigger in so["spec"]["triggers"]:
        (name,) = metric_names(trigger["metadata"]["query"])
        found[name] = trigger
    return found


# ---- the checks: each returns its problems ------------------------------------------------------------------

def schema_problems(document: dict, schema_file: str) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads((SCHEMAS / schema_file).read_text()))
    return [f"/{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def hpa_keda_makes(so: dict) -> dict:
    """The autoscaling/v2 HPA KEDA creates for a ScaledObject: its bounds and behaviour, and one External
    metric per trigger, named s<index>-<type>, whose target is the trigger's threshold."""
    spec = so["spec"]
    metrics = []
    for index, trigger in enumerate(spec["triggers"]):
        kind = trigger.get("metricType", "AverageValue")
        target = {"type": kind, ("averageValue" if kind == "AverageValue" else "value"): trigger["metadata"]["threshold"]}
        selector = {"matchLabels": {"scaledobject.keda.sh/name": so["metadata"]["name"]}}
        metrics.append({"type": "External", "external": {"metric": {"name": f"s{index}-{trigger['type']}", "selector": selector}, "target": target}})
    ref = spec["scaleTargetRef"]
    hpa_spec = {
        "scaleTargetRef": {"apiVersion": ref.get("apiVersion", "apps/v1"), "kind": ref.get("kind", "Deployment"), "name": ref["name"]},
        "minReplicas": spec.get("minReplicaCount", 1),
        "maxReplicas": spec.get("maxReplicaCount", 100),
        "metrics": metrics,
    }
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        hpa_spec["behavior"] = behavior
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": f"keda-hpa-{so['metadata']['name']}"}, "spec": hpa_spec}


def kubernetes_problems(resource: dict) -> list[str]:
    try:
        validate_strictly(resource)
    except kubernetes_validate.ValidationError as error:
        return [str(error)]
    return []


def target_problems(so: dict, deployment: dict) -> list[str]:
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", **so["spec"]["scaleTargetRef"]}
    wanted = {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]}
    return [] if ref == wanted else [f"scaleTargetRef {ref} is not the Deployment {wanted}"]


def keda_query_problems(so: dict, samples: dict[str, set[str]]) -> list[str]:
    found = []
    for trigger in so["spec"]["triggers"]:
        name, meta = trigger.get("name", trigger["type"]), trigger["metadata"]
        if trigger["type"] != "prometheus":
            found.append(f"{name}: a {trigger['type']} trigger, not prometheus")
            continue
        query = meta["query"]
        found += [f"{name}: {problem}" for problem in problems(query, samples, KUBERNETES_TARGET_LABELS)]
        if not metric_names(query) & set(samples):
            found.append(f"{name}: asks for no metric of the service")
        # KEDA takes one value and refuses a result of several series: no grouping but the buckets'.
        for group in re.findall(r"\bby\s*\(([^)]*)\)", query):
            if {label.strip() for label in group.split(",")} != {"le"}:
                found.append(f"{name}: grouped by ({group}), several series where KEDA takes one value")
        # No series (no traffic yet) is 0 in the query itself; an unreachable Prometheus stays an error.
        if meta.get("ignoreNullValues") != "false" or not query.rstrip().endswith("or vector(0)"):
            found.append(f"{name}: want ignoreNullValues false and `or vector(0)`, so only a Prometheus failure is an error")
        address = urlsplit(meta["serverAddress"])
        if address.scheme not in ("http", "https") or not address.hostname or address.path.endswith("/"):
            found.append(f"{name}: serverAddress {meta['serverAddress']!r} is not a Prometheus base URL")
    return found


def pod_selection_problems(so: dict, deployment: dict, others: list[dict]) -> list[str]:
    """Every query selects the Deployment's pods in its namespace, and no pod of the other Deployments."""
    namespace = deployment["metadata"].get("namespace")
    ours = deployment["metadata"]["name"] + POD_NAME_TAIL
    theirs = [other["metadata"]["name"] + POD_NAME_TAIL for other in others]
    found = []
    for trigger in so["spec"]["triggers"]:
        name, query = trigger.get("name", trigger["type"]), trigger["metadata"]["query"]
        namespaces = set(re.findall(r'\bnamespace\s*=\s*"([^"]*)"', query))
        pods = re.findall(r'\bpod\s*=~\s*"([^"]*)"', query)
        if namespaces != {namespace}:
            found.append(f"{name}: selects namespace {sorted(namespaces)}, the pods run in {namespace!r}")
        if not pods or not all(re.fullmatch(pattern, ours) for pattern in pods):
            found.append(f"{name}: pod selector {pods} does not match {ours}")
        found += [f"{name}: pod selector {pods} also matches {pod}" for pod in theirs if any(re.fullmatch(p, pod) for p in pods)]
    return found


def scale_down_problems(behavior: dict, deployment: dict) -> list[str]:
    """Capacity given back no sooner than the startup probe allows a new pod to load and warm its models."""
    probe = container(deployment)["startupProbe"]
    warm_up = probe["periodSeconds"] * probe["failureThreshold"]
    window = behavior.get("scaleDown", {}).get("stabilizationWindowSeconds", 0)
    return [] if window >= warm_up else [f"scale-down stabilization {window} s is shorter than the {warm_up} s a new pod may take to warm up"]


def keda_number_problems(so: dict, deployment: dict) -> list[str]:
    spec, found = so["spec"], []
    low, high = spec["minReplicaCount"], spec["maxReplicaCount"]
    if not 1 <= low <= high:
        found.append(f"replicas {low}..{high}: want 1 <= min <= max")
    if not 0 < spec.get("pollingInterval", 30) <= 30:
        found.append(f"pollingInterval {spec.get('pollingInterval')}: want 1..30 s")
    fallback = spec.get("fallback")
    if fallback is not None:
        if not low <= fallback["replicas"] <= high:
            found.append(f"fallback to {fallback['replicas']} replicas, outside {low}..{high}")
        if not any(t.get("metricType", "AverageValue") == "AverageValue" for t in spec["triggers"]):
            found.append("a fallback needs an AverageValue trigger (KEDA refuses it otherwise)")
    for metric, trigger in triggers_by_metric(so).items():
        threshold, kind = float(trigger["metadata"]["threshold"]), trigger.get("metricType", "AverageValue")
        if threshold <= 0:
            found.append(f"{metric}: threshold {threshold} <= 0")
        if metric in LOAD_GAUGES and kind != "AverageValue":
            found.append(f"{metric}: a load shared by the pods wants AverageValue, not {kind}")
        if metric == "ortserve_queued_rows" and threshold >= MAX_QUEUE_ROWS:
            found.append(f"{metric}: {threshold} rows per pod is past the {MAX_QUEUE_ROWS} at which a queue answers 503")
        if metric == QUEUE_WAIT and (kind != "Value" or threshold >= REQUEST_TIMEOUT_S):
            found.append(f"{metric}: a latency wants a Value target below the {REQUEST_TIMEOUT_S} s deadline, got {kind} {threshold}")
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
    return found + scale_down_problems(behavior, deployment)


def served_name(rule: dict, series: str) -> str | None:
    """The custom metric name prometheus-adapter serves a series under: `as` expanded with the captures of
    `matches` (Go's $1 or ${1}); `as` empty means $0 without groups, $1 with one."""
    naming = rule.get("name", {})
    match = re.search(naming.get("matches") or ".*", series)
    if match is None:
        return None
    template = naming.get("as") or ("$1" if match.re.groups == 1 else "$0")
    return re.sub(r"\$\{?(\d+)\}?", lambda ref: match.group(int(ref.group(1))), template)


def render_metrics_query(template: str, series: str) -> str:
    """metricsQuery as the adapter fills it for a Pods metric of some pods of one namespace."""
    fields = {"Series": series, "LabelMatchers": 'namespace="ortserve",pod=~"ortserve-a|ortserve-b"', "GroupBy": "pod"}
    return re.sub(r"<<\s*\.(\w+)\s*>>", lambda field: fields.get(field.group(1), field.group(0)), template)


def adapter_problems(config: dict, samples: dict[str, set[str]]) -> list[str]:
    found = []
    for rule in config["rules"]:
        series_query = rule["seriesQuery"]
        found += [f"seriesQuery: {problem}" for problem in problems(series_query, samples, KUBERNETES_TARGET_LABELS)]
        names = metric_names(series_query)
        if len(names) != 1:
            found.append(f"seriesQuery {series_query!r} names {sorted(names)}, want one metric")
            continue
        (series,) = names
        required = set(re.findall(r'(\w+)\s*!=\s*""', series_query))
        if not KUBERNETES_TARGET_LABELS <= required:
            found.append(f"{series}: the series must carry {sorted(KUBERNETES_TARGET_LABELS)} to be found per pod")
        overrides = {label: mapping.get("resource") for label, mapping in rule.get("resources", {}).get("overrides", {}).items()}
        if overrides != {"namespace": "namespace", "pod": "pod"}:
            found.append(f"{series}: resources.overrides {overrides} do not map namespace and pod")
        if served_name(rule, series) is None:
            found.append(f"{series}: name.matches {rule['name'].get('matches')!r} does not match the series")
        query = render_metrics_query(rule["metricsQuery"], series)
        if "<<" in query or ">>" in query:
            found.append(f"{series}: metricsQuery {query!r} keeps a template field the adapter does not fill")
            continue
        found += [f"{series} metricsQuery: {problem}" for problem in problems(query, samples, KUBERNETES_TARGET_LABELS)]
        if not re.search(r"\bby\s*\(\s*pod\s*\)", query):
            found.append(f"{series}: metricsQuery {query!r} is not one value per pod (by (<<.GroupBy>>))")
    return found


def hpa_metric_problems(hpa: dict, config: dict) -> list[str]:
    served = {served_name(rule, name) for rule in config["rules"] for name in metric_names(rule["seriesQuery"])}
    found = []
    for metric in hpa["spec"]["metrics"]:
        if metric["type"] != "Pods":
            found.append(f"a {metric['type']} metric: the overlay scales on per-pod custom metrics only")
        elif metric["pods"]["metric"]["name"] not in served:
            found.append(f"{metric['pods']['metric']['name']} is not served by the adapter rules ({sorted(served)})")
    return found


# ---- the files as they are ------------------------------------------------------------------------------------

def test_scaled_object_matches_kedas_types():
    assert schema_problems(scaled_object(), "keda-scaledobject.json") == []


def test_scaled_object_behaviour_is_a_valid_hpa():
    validate_strictly(hpa_keda_makes(scaled_object()))


def test_scaled_object_targets_the_deployment():
    assert target_problems(scaled_object(), base_resources()["Deployment"]) == []


def test_keda_queries_ask_only_for_what_the_service_exposes():
    so = scaled_object()
    assert keda_query_problems(so, declared()) == []
    assert set(triggers_by_metric(so)) == LOAD_GAUGES | {QUEUE_WAIT}


def test_keda_queries_select_the_overlays_pods():
    """Without rendering: the overlay's namespace, the base Deployment's pods, not the GPU overlay's."""
    overlay = yaml.safe_load((KEDA / "kustomization.yaml").read_text())
    deployment = broken(base_resources()["Deployment"], lambda d: d["metadata"].update(namespace=overlay["namespace"]))
    gpu_suffix = yaml.safe_load((GPU / "kustomization.yaml").read_text())["nameSuffix"]
    gpu = broken(deployment, lambda d: d["metadata"].update(name=d["metadata"]["name"] + gpu_suffix))
    assert pod_selection_problems(scaled_object(), deployment, [gpu]) == []


def test_keda_numbers_make_sense():
    assert keda_number_problems(scaled_object(), base_resources()["Deployment"]) == []


def test_adapter_rules_are_a_config_map_and_an_adapter_config():
    config_map = adapter_config_map()
    validate_strictly(config_map)
    assert set(config_map["data"]) == {"config.yaml"}  # the file the adapter reads (--config=/etc/adapter/config.yaml)
    assert schema_problems(adapter_config(config_map), "prometheus-adapter-config.json") == []


def test_adapter_rules_ask_only_for_what_the_service_exposes():
    config = adapter_config(adapter_config_map())
    assert adapter_problems(config, declared()) == []
    served = {served_name(rule, name) for rule in config["rules"] for name in metric_names(rule["seriesQuery"])}
    assert served == LOAD_GAUGES


def test_custom_metrics_hpa_scales_on_what_the_adapter_serves():
    hpa = custom_metrics_hpa()
    validate_strictly(hpa)
    assert hpa_metric_problems(hpa, adapter_config(adapter_config_map())) == []
    assert scale_down_problems(hpa["spec"]["behavior"], base_resources()["Deployment"]) == []


def test_both_overlays_scale_alike():
    """The same bounds as the base HPA, the same behaviour, and the same target for the same gauge."""
    so, hpa, base = scaled_object(), custom_metrics_hpa(), base_resources()["HorizontalPodAutoscaler"]
    bounds = (base["spec"]["minReplicas"], base["spec"]["maxReplicas"])
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == bounds == (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]
    hpa_targets = {m["pods"]["metric"]["name"]: float(m["pods"]["target"]["averageValue"]) for m in hpa["spec"]["metrics"]}
    keda_targets = {name: float(t["metadata"]["threshold"]) for name, t in triggers_by_metric(so).items() if name in LOAD_GAUGES}
    assert hpa_targets == keda_targets


# ---- the overlays as kustomize renders them ---------------------------------------------------------------------

def test_keda_overlay_renders_the_scaled_object_instead_of_the_hpa():
    rendered = kustomize(KEDA)
    assert set(rendered) == {"Deployment", "Service", "ScaledObject"}, "KEDA makes its own HPA: the base's must go"
    for kind in ("Deployment", "Service"):
        validate_strictly(rendered[kind])
    so, deployment = rendered["ScaledObject"], rendered["Deployment"]
    assert schema_problems(so, "keda-scaledobject.json") == []
    assert target_problems(so, deployment) == []
    assert so["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert pod_selection_problems(so, deployment, [kustomize(GPU)["Deployment"]]) == []
    assert keda_number_problems(so, deployment) == []


def test_scaled_object_follows_a_renamed_deployment(tmp_path):
    """A name suffix given on top of the overlay reaches scaleTargetRef (the overlay's nameReference)."""
    outer = tmp_path / "renamed"
    outer.mkdir()
    (outer / "kustomization.yaml").write_text(yaml.safe_dump({"resources": [os.path.relpath(KEDA, outer)], "nameSuffix": "-blue"}))
    rendered = kustomize(outer)
    assert rendered["Deployment"]["metadata"]["name"] == "ortserve-blue"
    assert target_problems(rendered["ScaledObject"], rendered["Deployment"]) == []


def test_custom_metrics_overlay_renders_one_hpa_on_pods_metrics():
    rendered = kustomize(CUSTOM_METRICS)
    assert set(rendered) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for resource in rendered.values():
        validate_strictly(resource)
    hpa = rendered["HorizontalPodAutoscaler"]
    assert hpa == {**custom_metrics_hpa(), "metadata": hpa["metadata"]}, "kustomize merged the patch otherwise"
    assert hpa["spec"]["scaleTargetRef"]["name"] == rendered["Deployment"]["metadata"]["name"]
    assert hpa_metric_problems(hpa, adapter_config(adapter_config_map())) == []


# ---- each check finds what it is for ----------------------------------------------------------------------------

def broken(document: dict, change: Callable[[dict], None]) -> dict:
    copied = copy.deepcopy(document)
    change(copied)
    return copied


def trigger(so: dict, metric: str) -> dict:
    return triggers_by_metric(so)[metric]


def set_query(so: dict, metric: str, old: str, new: str) -> None:
    meta = trigger(so, metric)["metadata"]
    assert old in meta["query"]
    meta["query"] = meta["query"].replace(old, new)


def rule_for(config: dict, metric: str) -> dict:
    (rule,) = [rule for rule in config["rules"] if metric in rule["seriesQuery"]]
    return rule


DEPLOYMENT_IN_ORTSERVE = broken(base_resources()["Deployment"], lambda d: d["metadata"].update(namespace="ortserve"))
SCALED_OBJECT_BREAKAGES = {
    "misspelt spec field": (lambda so: so["spec"].update(minReplicas=so["spec"].pop("minReplicaCount")),
                            lambda so: schema_problems(so, "keda-scaledobject.json")),
    "threshold not a string": (lambda so: trigger(so, "ortserve_queued_rows")["metadata"].update(threshold=32),
                               lambda so: schema_problems(so, "keda-scaledobject.json")),
    "misspelt scaler key": (lambda so: trigger(so, "ortserve_queued_rows")["metadata"].update(serverAdress="http://p"),
                            lambda so: schema_problems(so, "keda-scaledobject.json")),
    "misspelt behaviour field": (
        lambda so: so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].update(stabilisationWindowSeconds=60),
        lambda so: kubernetes_problems(hpa_keda_makes(so))),
    "misspelt metric": (lambda so: set_query(so, "ortserve_queued_rows", "ortserve_queued_rows{", "ortserve_queue_rows{"),
                        lambda so: keda_query_problems(so, declared())),
    "misspelt prefix": (lambda so: set_query(so, "ortserve_inflight_requests", "ortserve_inflight", "ortserv_inflight"),
                        lambda so: keda_query_problems(so, declared())),
    "label the metric lacks": (lambda so: set_query(so, "ortserve_queued_rows", 'namespace="ortserve"', 'namespace="ortserve", route="/sentiment"'),
                               lambda so: keda_query_problems(so, declared())),
    "several series": (lambda so: set_query(so, "ortserve_queued_rows", "sum(", "sum by (model) ("),
                       lambda so: keda_query_problems(so, declared())),
    "empty result ignored": (lambda so: trigger(so, "ortserve_inflight_requests")["metadata"].update(ignoreNullValues="true"),
                             lambda so: keda_query_problems(so, declared())),
    "another target": (lambda so: so["spec"]["scaleTargetRef"].update(name="ortserve-gpu"),
                       lambda so: target_problems(so, base_resources()["Deployment"])),
    "threshold past the 503 point": (lambda so: trigger(so, "ortserve_queued_rows")["metadata"].update(threshold="2048"),
                                     lambda so: keda_number_problems(so, base_resources()["Deployment"])),
    "latency averaged per pod": (lambda so: trigger(so, QUEUE_WAIT).update(metricType="AverageValue"),
                                 lambda so: keda_number_problems(so, base_resources()["Deployment"])),
    "scale-down before warm-up": (
        lambda so: so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].update(stabilizationWindowSeconds=60),
        lambda so: keda_number_problems(so, base_resources()["Deployment"])),
    "min above max": (lambda so: so["spec"].update(minReplicaCount=9),
                      lambda so: keda_number_problems(so, base_resources()["Deployment"])),
    "another namespace": (lambda so: set_query(so, QUEUE_WAIT, 'namespace="ortserve"', 'namespace="default"'),
                          lambda so: pod_selection_problems(so, DEPLOYMENT_IN_ORTSERVE, [])),
    "GPU pods selected too": (lambda so: set_query(so, "ortserve_queued_rows", 'pod=~"ortserve-[a-z0-9]+-', 'pod=~"ortserve-.*-'),
                              lambda so: pod_selection_problems(so, DEPLOYMENT_IN_ORTSERVE,
                                                                [broken(DEPLOYMENT_IN_ORTSERVE, lambda d: d["metadata"].update(name="ortserve-gpu"))])),
}


@pytest.mark.parametrize("breakage", list(SCALED_OBJECT_BREAKAGES))
def test_scaled_object_checks_catch(breakage):
    change, check = SCALED_OBJECT_BREAKAGES[breakage]
    assert check(scaled_object()) == []
    assert check(broken(scaled_object(), change)) != []


ADAPTER_BREAKAGES = {
    "unknown field": lambda config: rule_for(config, "ortserve_queued_rows").update(metricQuery="sum(x)"),
    "misspelt series": lambda config: rule_for(config, "ortserve_queued_rows").update(
        seriesQuery='ortserve_queue_rows{namespace!="", pod!=""}'),
    "series without pods": lambda config: rule_for(config, "ortserve_inflight_requests").update(
        seriesQuery='ortserve_inflight_requests{namespace!=""}'),
    "pod not mapped": lambda config: rule_for(config, "ortserve_inflight_requests")["resources"]["overrides"].pop("pod"),
    "name that matches nothing": lambda config: rule_for(config, "ortserve_queued_rows")["name"].update(matches="^ortserve_queue_rows$"),
    "template field misspelt": lambda config: rule_for(config, "ortserve_queued_rows").update(
        metricsQuery="sum by (<<.GroupBy>>) (<<.Serie>>{<<.LabelMatchers>>})"),
    "label the metric lacks": lambda config: rule_for(config, "ortserve_queued_rows").update(
        metricsQuery='sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>, endpoint="/sentiment"})'),
    "not per pod": lambda config: rule_for(config, "ortserve_queued_rows").update(metricsQuery="sum(<<.Series>>{<<.LabelMatchers>>})"),
}


@pytest.mark.parametrize("breakage", list(ADAPTER_BREAKAGES))
def test_adapter_checks_catch(breakage):
    config = adapter_config(adapter_config_map())
    ADAPTER_BREAKAGES[breakage](config)
    assert schema_problems(config, "prometheus-adapter-config.json") + adapter_problems(config, declared()) != []


@pytest.mark.parametrize("change", [
    lambda hpa: hpa["spec"]["metrics"][0]["pods"]["metric"].update(name="ortserve_queue_rows"),
    lambda hpa: hpa["spec"]["metrics"].append({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}),
], ids=["metric the adapter does not serve", "a CPU metric besides"])
def test_hpa_metric_check_catches(change):
    config = adapter_config(adapter_config_map())
    assert hpa_metric_problems(broken(custom_metrics_hpa(), change), config) != []
