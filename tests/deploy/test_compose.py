"""docker-compose.yml against the Compose Specification schema, then what the profiles must hold."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import ROOT, SCHEMAS

MONITORING = ROOT / "deploy" / "monitoring"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema)


def test_matches_the_compose_specification(compose, validator):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors


def test_schema_rejects_a_misspelt_key(compose, validator):
    broken = copy.deepcopy(compose)
    broken["services"]["ortserve"]["healthchek"] = broken["services"]["ortserve"].pop("healthcheck")
    assert any("healthchek" in e.message for e in validator.iter_errors(broken))


def test_every_published_port_is_loopback_only(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_default_service_is_the_cpu_image_with_a_readiness_check(compose):
    defaults = [name for name, s in compose["services"].items() if not s.get("profiles")]
    assert defaults == ["ortserve"]
    service = compose["services"]["ortserve"]
    assert service["build"]["target"] == "cpu"
    assert service["ports"] == ["127.0.0.1:8000:8000", "127.0.0.1:8081:8081"]  # REST, and the Open Inference Protocol over gRPC
    assert "/health/ready" in " ".join(service["healthcheck"]["test"])
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]


def test_gpu_profile_reserves_an_nvidia_gpu(compose):
    service = compose["services"]["ortserve-gpu"]
    assert service["profiles"] == ["gpu"]
    assert service["build"]["target"] == "gpu"
    assert service["environment"]["ORTSERVE_PROVIDERS"] == "cuda"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    cpu_ports = {p.rsplit(":", 1)[0] for p in compose["services"]["ortserve"]["ports"]}
    assert not cpu_ports & {p.rsplit(":", 1)[0] for p in service["ports"]}, "both can run at once"


def test_monitoring_profile(compose):
    monitoring = sorted(n for n, s in compose["services"].items() if "monitoring" in s.get("profiles", []))
    assert monitoring == ["grafana", "prometheus"]


def test_mounted_configuration_exists(compose):
    for name in ("prometheus", "grafana"):
        for volume in compose["services"][name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"


def test_prometheus_scrapes_each_service_on_its_container_port(compose):
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    served = {f"{name}:{s['ports'][0].rsplit(':', 1)[1]}" for name, s in compose["services"].items() if "build" in s}
    assert targets == served == {"ortserve:8000", "ortserve-gpu:8000"}


def test_grafana_provisioning_points_at_the_dashboard_and_datasource(compose):
    provisioning = MONITORING / "grafana" / "provisioning"
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "ortserve.yml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./deploy/monitoring/grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((MONITORING / "grafana" / "dashboards" / "ortserve.json").read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {datasource["uid"]}
