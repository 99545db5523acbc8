"""The load pods ``loadgate.kubernetes`` renders: the local backend's command line, the plan's
resources, the labels of the run, a locked-down security context, no secret value, and a spec
that the Kubernetes 1.29 to 1.33 schemas accept (``kubernetes-validate``, strict)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from pydantic import ValidationError

from loadgate.backends.command import engine_argv
from loadgate.backends.kubernetes import manifests
from loadgate.config import pods as pod_settings
from loadgate.config.run import RunConfig, resolve_plan_path
from loadgate.pipeline import prepare
from loadgate.run.folder import Run
from tests.support.helpers import REFERENCE_PLAN, reference_run

K8S_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33")
RUN_ID = "manual__2026-05-01T10:00:00.123456+00:00"

FULL = pod_settings.PodSettings(
    namespace="load-testing",
    image="registry.example.com/loadgate:1.4.2",
    image_pull_policy="Always",
    image_pull_secrets=["registry-pull"],
    service_account="loadgate-runner",
    node_selector={"node-pool": "load-generators"},
    tolerations=[
        {"key": "dedicated", "operator": "Equal", "value": "load", "effect": "NoSchedule"},
        {"operator": "Exists", "effect": "NoExecute", "toleration_seconds": 60},
    ],
    priority_class="batch-low",
    labels={"team": "sre"},
    annotations={"example.com/owner": "sre"},
    env={"LOADGATE_LOG_LEVEL": "info"},
    secret_env={
        "AWS_ACCESS_KEY_ID": {"secret": "loadgate-s3", "key": "access_key_id"},
        "AWS_SECRET_ACCESS_KEY": {"secret": "loadgate-s3", "key": "secret_access_key"},
    },
    env_from_secrets=["loadgate-extra"],
    secret_volumes=[{"secret": "loadgate-target", "mount_path": "/var/run/secrets/loadgate"}],
)


def make_run(tmp_path: Path, **config: Any) -> Run:
    cfg = RunConfig(
        **reference_run(
            target_url="http://127.0.0.1:8080",
            artifacts_root=str(tmp_path / "artifacts"),
            scale=0.01,
            time_scale=0.05,
            release="v2",
            **config,
        )
    )
    return Run({"run_id": RUN_ID, "config": cfg.model_dump(mode="json")})


def validate_all(manifest: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return make_run(tmp_path)


@pytest.mark.parametrize("stage", ["api", "websocket", "session"])
@pytest.mark.parametrize("settings", [pod_settings.PodSettings(), FULL], ids=["defaults", "full"])
def test_every_shard_pod_validates_against_kubernetes_1_29_to_1_33(run, stage, settings) -> None:
    pods = manifests.stage_pods(run, stage, settings)
    assert len(pods) == run.shards(stage)
    for pod in pods:
        validate_all(pod)
        assert manifests.secret_findings(pod) == []


def test_the_validator_is_not_vacuous(run) -> None:
    pod = manifests.shard_pod(run, "api", 0, 2, key="k", settings=FULL)
    broken = copy.deepcopy(pod)
    broken["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = "yes"
    unknown = copy.deepcopy(pod)
    unknown["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    for bad in (broken, unknown):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, "1.33", strict=True)


def test_the_pod_runs_the_local_backends_command_line(run) -> None:
    pod = manifests.shard_pod(run, "api", 1, 3, key="abcd1234-5", settings=FULL)
    (container,) = pod["spec"]["containers"]
    out = str(run.artifacts.path("stages", "api", "shard-1"))
    assert container["command"] + container["args"] == [
        "loadgate",
        *engine_argv(run, "api", 1, 3, out, "abcd1234-5"),
    ]
    assert container["name"] == "base"  # the container the KubernetesPodOperator follows
    assert container["image"] == "registry.example.com/loadgate:1.4.2"


def test_pods_run_the_plan_copy_that_prepare_wrote_into_the_run_root(tmp_path) -> None:
    """Pods read the plan from the run root, not from their image: the shards run the plan
    the DAG validated, even if the plan file (or the image's copy) changes during the run."""
    plan_file = tmp_path / "gate.yaml"
    plan_file.write_bytes(resolve_plan_path(REFERENCE_PLAN).read_bytes())
    cfg = RunConfig(
        **reference_run(
            target_url="http://127.0.0.1:8080",
            artifacts_root=str(tmp_path / "artifacts"),
            plan=str(plan_file),
        )
    )
    record = prepare(cfg, RUN_ID)
    plan_file.write_text("name: changed-after-prepare\nstages: {}\n")
    run = Run(record)
    copy_path = run.artifacts.path("plan.yaml")
    pod = manifests.shard_pod(run, "api", 0, 2, key="k", settings=pod_settings.PodSettings())
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--plan") + 1] == str(copy_path)
    assert run.plan.name == record.plan_name != "changed-after-prepare"
    assert copy_path.read_bytes() == resolve_plan_path(REFERENCE_PLAN).read_bytes()


def test_resources_come_from_the_plans_stage(run) -> None:
    pod = manifests.shard_pod(run, "websocket", 0, 1, key="k", settings=FULL)
    plan_resources = run.plan.stages["websocket"].resources
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": dict(plan_resources.requests),
        "limits": dict(plan_resources.limits),
    }


def test_a_stage_without_resources_gets_the_settings_default(tmp_path: Path) -> None:
    plan = tmp_path / "tiny.yaml"
    plan.write_text(
        json.dumps(
            {
                "name": "tiny",
                "stages": {
                    "api": {
                        "scenarios": {
                            "probe": {
                                "exec": "basic.get",
                                "executor": "constant-vus",
                                "vus": 1,
                                "duration": "2s",
                            }
                        }
                    }
                },
            }
        )
    )
    run = make_run(tmp_path, plan=str(plan), stages=["api"])
    settings = pod_settings.PodSettings(
        default_resources={"requests": {"cpu": "250m"}, "limits": {"memory": "256Mi"}}
    )
    pod = manifests.shard_pod(run, "api", 0, 1, key="k", settings=settings)
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "250m"},
        "limits": {"memory": "256Mi"},
    }
    validate_all(pod)


def test_labels_name_the_run_stage_and_shard(run) -> None:
    pods = manifests.stage_pods(run, "api", FULL)
    label = manifests.run_label(RUN_ID)
    assert len({p["metadata"]["labels"][manifests.KEY_LABEL] for p in pods}) == 1  # one engine key
    for i, pod in enumerate(pods):
        labels = pod["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "loadgate"
        assert labels["loadgate/run"] == label
        assert labels["loadgate/stage"] == "api"
        assert labels["loadgate/shard"] == str(i)
        assert labels["team"] == "sre"
        assert pod["metadata"]["annotations"]["loadgate/run-id"] == RUN_ID
        assert pod["metadata"]["namespace"] == "load-testing"
    assert len({p["metadata"]["name"] for p in pods}) == len(pods)
    assert manifests.run_selector(RUN_ID) == f"app.kubernetes.io/name=loadgate,loadgate/run={label}"


def test_run_label_is_stable_short_and_label_safe() -> None:
    label = manifests.run_label(RUN_ID)
    assert label == manifests.run_label(RUN_ID)
    assert label != manifests.run_label(RUN_ID + "x")
    assert len(label) == 16 and label.isalnum()
    from loadgate.backends.command import run_key

    assert run_key(RUN_ID).startswith(label[:8])  # the engine's ids point back to the run


def test_security_context_non_root_read_only_root_filesystem(run) -> None:
    pod = manifests.shard_pod(run, "session", 0, 1, key="k", settings=pod_settings.PodSettings())
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts["/var/lib/loadgate"]]
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False


def test_placement_settings(run) -> None:
    spec = manifests.shard_pod(run, "api", 0, 2, key="k", settings=FULL)["spec"]
    assert spec["serviceAccountName"] == "loadgate-runner"
    assert spec["nodeSelector"] == {"node-pool": "load-generators"}
    assert spec["tolerations"] == [
        {"operator": "Equal", "key": "dedicated", "value": "load", "effect": "NoSchedule"},
        {"operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
    ]
    assert spec["priorityClassName"] == "batch-low"
    assert spec["imagePullSecrets"] == [{"name": "registry-pull"}]
    term = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "loadgate/run": manifests.run_label(RUN_ID)
    }


def test_the_pod_is_bounded_in_time(run) -> None:
    pod = manifests.shard_pod(run, "api", 0, 1, key="k", settings=pod_settings.PodSettings())
    stage_s = run.plan.stages["api"].duration * run.config.time_scale
    deadline = pod["spec"]["activeDeadlineSeconds"]
    assert stage_s < deadline <= stage_s + 601


def test_credentials_come_from_secrets_never_from_values(run) -> None:
    pod = manifests.shard_pod(run, "api", 0, 1, key="k", settings=FULL)
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "name": "AWS_SECRET_ACCESS_KEY",
        "valueFrom": {"secretKeyRef": {"name": "loadgate-s3", "key": "secret_access_key"}},
    }
    assert container["envFrom"] == [{"secretRef": {"name": "loadgate-extra"}}]
    secret_volume = next(v for v in pod["spec"]["volumes"] if "secret" in v)
    assert secret_volume["secret"] == {"secretName": "loadgate-target", "defaultMode": 0o400}
    assert manifests.secret_findings(pod) == []


def test_no_secret_value_reaches_the_spec(run, tmp_path: Path) -> None:
    """Seeded users' credentials live in the artifacts; the pod names the file, not them."""
    users = run.users_file()
    users.parent.mkdir(parents=True, exist_ok=True)
    users.write_text(json.dumps({"email": "u@example.com", "password": "Hunter2-secret!"}) + "\n")
    pod = manifests.shard_pod(run, "api", 0, 1, key="k", settings=FULL)
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--users") + 1] == str(users)
    assert manifests.secret_findings(pod, known_secrets=["Hunter2-secret!", "xoxb-slack"]) == []
    assert "Hunter2" not in json.dumps(pod)


def test_secret_findings_catch_what_must_not_be_there() -> None:
    leaky = {
        "spec": {
            "containers": [
                {
                    "args": ["run-stage", "--token=abc", "--password", "x"],
                    "env": [{"name": "ADMIN_TOKEN", "value": "abc"}],
                }
            ]
        }
    }
    findings = manifests.secret_findings(leaky, known_secrets=["abc"])
    assert any("known secret" in f for f in findings)
    assert any("ADMIN_TOKEN" in f for f in findings)
    assert any("--token" in f for f in findings)
    assert any("--password" in f for f in findings)


@pytest.mark.parametrize("name", ["API_TOKEN", "DB_PASSWORD", "AWS_SECRET_ACCESS_KEY", "apikey"])
def test_settings_refuse_a_credential_as_a_plain_env_value(name: str) -> None:
    with pytest.raises(ValidationError, match="secret_env"):
        pod_settings.PodSettings(env={name: "value"})


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError):
        pod_settings.PodSettings(namespace="Not_A_Namespace")
    with pytest.raises(ValidationError):
        pod_settings.PodSettings(labels={"team": "not a label value"})
    with pytest.raises(ValidationError):
        pod_settings.PodSettings(results_dir="/tmp")
    with pytest.raises(ValidationError):
        pod_settings.PodSettings(unknown_field=1)
    with pytest.raises(ValidationError, match="needs a key"):
        pod_settings.PodSettings(tolerations=[{"value": "x"}])
    assert pod_settings.PodSettings.model_validate(json.loads(FULL.model_dump_json())) == FULL


def test_a_manifest_becomes_the_operators_v1pod(run) -> None:
    pod = manifests.shard_pod(run, "api", 0, 1, key="k", settings=FULL)
    v1 = manifests.to_v1pod(pod)
    assert v1.metadata.labels == pod["metadata"]["labels"]
    assert v1.spec.containers[0].args == pod["spec"]["containers"][0]["args"]
    assert v1.spec.containers[0].security_context.read_only_root_filesystem is True
    assert v1.spec.tolerations[1].toleration_seconds == 60


def test_pod_manifest_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="command"):
        manifests.pod_manifest(name="x", argv=[], settings=pod_settings.PodSettings(), labels={})
    with pytest.raises(ValueError, match="pod name"):
        manifests.pod_manifest(
            name="Bad_Name", argv=["x"], settings=pod_settings.PodSettings(), labels={}
        )
    with pytest.raises(ValueError, match="label"):
        manifests.pod_manifest(
            name="ok",
            argv=["x"],
            settings=pod_settings.PodSettings(),
            labels={"loadgate/stage": "a b"},
        )
    with pytest.raises(ValueError, match="shard"):
        manifests.shard_pod(
            make_run(Path("/nonexistent")),
            "api",
            2,
            2,
            key="k",
            settings=pod_settings.PodSettings(),
        )


def test_a_pod_of_an_s3_run_root_needs_no_shared_volume(s3) -> None:
    """Its --out, --users and abort marker are s3:// URLs; the AWS keys come by reference."""
    cfg = RunConfig(
        **reference_run(
            target_url="http://127.0.0.1:8080", artifacts_root=s3.url("runs"), scale=0.01
        )
    )
    run = Run({"run_id": RUN_ID, "config": cfg.model_dump(mode="json")})
    run.users_file().write_text('{"email": "u@example.com", "password": "Hunter2-s3!"}\n')
    settings = FULL.model_copy(update={"env": {"AWS_ENDPOINT_URL": s3.endpoint}})
    pod = manifests.shard_pod(run, "api", 1, 2, key="k", settings=settings)
    validate_all(pod)
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    root = f"{s3.url('runs')}/manual__2026-05-01T10-00-00.123456-00-00~ac4be4db323b"
    assert args[args.index("--out") + 1] == f"{root}/stages/api/shard-1"
    assert args[args.index("--users") + 1] == f"{root}/users.jsonl"
    assert "--abort-dir" not in args  # the marker is beside the shards: stages/api/ABORT
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "loadgate-s3"
    assert env["AWS_ENDPOINT_URL"]["value"] == s3.endpoint
    assert env["LOADGATE_RESULTS_DIR"]["value"] == settings.results_dir  # the engine's scratch
    known = ["Hunter2-s3!", os.environ["AWS_SECRET_ACCESS_KEY"]]
    assert manifests.secret_findings(pod, known_secrets=known) == []
