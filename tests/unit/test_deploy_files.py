"""deploy/: the BentoCloud deployment file reads as BentoML's own deployment schema, and every
variable it and the compose recipe set is one the gateway reads (a typo would be ignored)."""

from __future__ import annotations

from pathlib import Path

import yaml
from bentoml._internal.cloud.schemas.schemasv2 import CreateDeploymentSchema
from bentoml._internal.cloud.schemas.utils import schema_from_object

from gateway.settings import Settings
from loadtest.harness import ROOT

DEPLOY = ROOT / "deploy"
READ = {field.validation_alias for field in Settings.model_fields.values()}


def load(path: Path) -> dict:  # type: ignore[type-arg]
    return dict(yaml.safe_load(path.read_text()))


def test_the_bentocloud_file_is_a_deployment_bentoml_understands() -> None:
    deployment = schema_from_object(load(DEPLOY / "bentocloud.yaml"), CreateDeploymentSchema)
    assert deployment.bento.startswith("llm-gateway")
    assert deployment.secrets == ["llm-gateway"]
    service = deployment.services["llm-gateway"]
    assert service.scaling is not None and service.scaling.min_replicas >= 2
    names = {env.name for env in deployment.envs or []}
    assert names <= READ
    # The upstream key, REDIS_URL and the admin key come from the secret, never from the file.
    assert not names & {"HOLYSHEEP_API_KEY", "REDIS_URL", "GATEWAY_ADMIN_KEY"}


def test_the_compose_recipe_sets_only_variables_the_gateway_reads() -> None:
    compose = load(DEPLOY / "selfhosted" / "compose.yaml")
    gateway = compose["x-gateway"]
    assert set(gateway["environment"]) <= READ
    drain = float(gateway["environment"]["GATEWAY_SHUTDOWN_DRAIN"])
    grace = float(gateway["environment"]["GATEWAY_SHUTDOWN_GRACE"])
    assert float(gateway["stop_grace_period"].removesuffix("s")) > drain + grace
    assert {"gw1", "gw2", "gw3", "redis", "haproxy"} <= set(compose["services"])


def test_the_redis_config_appends_and_never_evicts() -> None:
    lines = {line.split()[0]: line.split()[1:] for line in
             (DEPLOY / "selfhosted" / "redis.conf").read_text().splitlines()
             if line.strip() and not line.startswith("#")}
    assert lines["appendonly"] == ["yes"] and lines["maxmemory-policy"] == ["noeviction"]
