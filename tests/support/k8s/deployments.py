"""A small deployment controller: a new pod template makes a new ReplicaSet (or re-promotes the
old one with the same template, as a rollback does) with the ``deployment.kubernetes.io/revision``
annotation; the rollout completes after a set time, or never (:meth:`set_rollout`). No pod of a
deployment runs: the ReplicaSets' and the deployment's status say where the rollout is."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .selectors import labels_match, match_labels_selector, parse_label_selector
from .store import Controller, Store

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
HASH_LABEL = "pod-template-hash"


@dataclass
class Rollout:
    started: float
    seconds: float = 0.0
    stuck: bool = False


class DeploymentController(Controller):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.rollouts: dict[tuple[str, str], Rollout] = {}
        self.overrides: dict[tuple[str, str], tuple[float, bool]] = {}

    def set_rollout(
        self, namespace: str, deployment: str, *, seconds: float = 0.0, stuck: bool = False
    ) -> None:
        """How the next rollouts of ``deployment`` go: done after ``seconds``, or never."""
        with self.store.lock:
            self.overrides[(namespace, deployment)] = (seconds, stuck)

    # --- the store's hooks ----------------------------------------------------------------------

    def validate(self, dep: dict[str, Any]) -> None:
        spec = dep.setdefault("spec", {})
        if not spec.get("selector") or not spec.get("template"):
            raise ApiError(422, "Deployment is invalid: spec.selector, spec.template: Required")
        template_labels = (spec["template"].get("metadata") or {}).get("labels") or {}
        if not labels_match(
            template_labels, parse_label_selector(match_labels_selector(spec["selector"]))
        ):
            raise ApiError(
                422,
                "Deployment is invalid: spec.template.metadata.labels: Invalid value: "
                "`selector` does not match template `labels`",
            )
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
        )
        dep["metadata"]["generation"] = 1
        dep["status"] = {}

    def created(self, dep: dict[str, Any]) -> None:
        self._rollout(dep)

    def replaced(self, old: dict[str, Any], dep: dict[str, Any]) -> None:
        dep["metadata"]["generation"] = old["metadata"].get("generation", 1)
        if dep.get("spec") != old.get("spec"):
            dep["metadata"]["generation"] += 1
        dep["status"] = old.get("status", {})
        old_template = (old.get("spec") or {}).get("template")
        if dep["spec"].get("template") != old_template and not dep["spec"].get("paused"):
            self._rollout(dep)
        else:
            self.refresh()

    # --- rollouts -----------------------------------------------------------------------------

    def _owned_replicasets(self, dep: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            rs
            for rs in self.store.select("apps/v1", "replicasets", dep["metadata"]["namespace"])
            if any(
                ref.get("uid") == dep["metadata"]["uid"] and ref.get("controller")
                for ref in rs["metadata"].get("ownerReferences") or []
            )
        ]

    def _rollout(self, dep: dict[str, Any]) -> None:
        """The deployment controller's answer to a new pod template."""
        ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
        template = _without_hash(dep["spec"]["template"])
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        owned = self._owned_replicasets(dep)
        revisions = [int(rs["metadata"].get("annotations", {}).get(REVISION, "0")) for rs in owned]
        revision = str(max(revisions, default=0) + 1)
        same = next((rs for rs in owned if _without_hash(rs["spec"]["template"]) == template), None)
        if same is not None:
            annotations = same["metadata"]["annotations"]
            history = [annotations.get(REVISION_HISTORY), annotations.get(REVISION)]
            annotations[REVISION_HISTORY] = ",".join(filter(None, history))
            annotations[REVISION] = revision
            self.store.touch(same)
        else:
            labelled = copy.deepcopy(template)
            labelled["metadata"]["labels"][HASH_LABEL] = digest
            selector = copy.deepcopy(dep["spec"]["selector"])
            selector.setdefault("matchLabels", {})[HASH_LABEL] = digest
            replicas = dep["spec"]["replicas"]
            rs = {
                "metadata": {
                    "name": f"{name}-{digest}",
                    "labels": {**template["metadata"]["labels"], HASH_LABEL: digest},
                    "annotations": {
                        REVISION: revision,
                        "deployment.kubernetes.io/desired-replicas": str(replicas),
                        "deployment.kubernetes.io/max-replicas": str(replicas + 1),
                    },
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "Deployment",
                            "name": name,
                            "uid": dep["metadata"]["uid"],
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": {"replicas": 0, "selector": selector, "template": labelled},
                "status": {"replicas": 0, "observedGeneration": 1},
            }
            self.store.create("apps/v1", "replicasets", ns, rs)
        dep["metadata"].setdefault("annotations", {})[REVISION] = revision
        seconds, stuck = self.overrides.get((ns, name), (0.0, False))
        self.rollouts[(ns, name)] = Rollout(time.monotonic(), seconds, stuck)
        self.store.touch(dep)
        self.refresh()

    def refresh(self) -> None:
        """Bring every deployment's and ReplicaSet's status to where its rollout is now."""
        for dep in self.store.select("apps/v1", "deployments", None):
            self._refresh(dep)

    def _refresh(self, dep: dict[str, Any]) -> None:
        rollout = self.rollouts.get((dep["metadata"]["namespace"], dep["metadata"]["name"]))
        desired = int(dep["spec"].get("replicas", 1))
        template = _without_hash(dep["spec"]["template"])
        owned = self._owned_replicasets(dep)
        new_rs = next(
            (rs for rs in owned if _without_hash(rs["spec"]["template"]) == template), None
        )
        elapsed = time.monotonic() - rollout.started if rollout else 0.0
        done = rollout is None or (not rollout.stuck and elapsed >= rollout.seconds)
        old_total = 0
        for rs in owned:
            is_new = rs is new_rs
            if is_new:  # one surge pod, not ready, until the rollout is done
                replicas = desired if done else 1
                ready = replicas if done else 0
            else:  # the old pods stay until the new ones are ready
                replicas = 0 if done else int(rs["spec"].get("replicas") or 0)
                ready = replicas
            new_status = {
                "replicas": replicas,
                "fullyLabeledReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": 1,
            }
            if rs["spec"].get("replicas") != replicas or rs.get("status") != new_status:
                rs["spec"]["replicas"] = replicas
                rs["status"] = new_status
                self.store.touch(rs)
            if not is_new:
                old_total += replicas
        updated = desired if done else (1 if new_rs is not None else 0)
        updated_ready = desired if done else 0
        total = updated + old_total
        available = updated_ready + old_total
        conditions = [
            {
                "type": "Available",
                "status": "True" if available >= desired else "False",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            }
        ]
        deadline = float(dep["spec"].get("progressDeadlineSeconds", 600))
        if done:
            progressing = ("True", "NewReplicaSetAvailable", "has successfully progressed.")
        elif rollout is not None and rollout.stuck and elapsed >= deadline:
            progressing = ("False", "ProgressDeadlineExceeded", "has timed out progressing.")
        else:
            progressing = ("True", "ReplicaSetUpdated", "is progressing.")
        rs_name = new_rs["metadata"]["name"] if new_rs else "?"
        conditions.append(
            {
                "type": "Progressing",
                "status": progressing[0],
                "reason": progressing[1],
                "message": f'ReplicaSet "{rs_name}" {progressing[2]}',
            }
        )
        status = {
            "observedGeneration": dep["metadata"].get("generation", 1),
            "replicas": total,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": conditions,
        }
        if total - available > 0:
            status["unavailableReplicas"] = total - available
        if dep.get("status") != status:
            dep["status"] = status
            self.store.touch(dep)


def _without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(template))
    out.setdefault("metadata", {}).setdefault("labels", {})
    out["metadata"]["labels"].pop(HASH_LABEL, None)
    return out
