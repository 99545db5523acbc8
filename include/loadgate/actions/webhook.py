"""The ``webhook`` rollback action: ``{"type": "webhook", "url": ...}``.

A POST of ``{"release", "run_id", "reasons"}`` with the target connection's token as a bearer
token; a 2xx answer is a rollback. The URL's path and query are often its secret: evidence,
outcomes and ``run.json`` show it as ``scheme://host[:port]`` only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import HttpUrl, model_validator

from loadgate import probe
from loadgate.actions.base import ActionConfig, Call, bearer, webhook_origin


class Config(ActionConfig):
    type: Literal["webhook"] = "webhook"
    url: HttpUrl | None = None

    @model_validator(mode="after")
    def _needs(self) -> Config:
        if self.url is None:
            raise ValueError("a webhook rollback needs 'url'")
        return self

    def secrets(self) -> list[str]:
        url = str(self.url)
        parts = HttpUrl(url)
        return [url, url.rstrip("/"), parts.path or "", parts.query or ""]


def validate(
    config: Config, target_url: str, secret: str | None = None, apps_api: Any = None
) -> str:
    return f"webhook {webhook_origin(config.url)}"


def execute(config: Config, call: Call, outcome: dict[str, Any]) -> bool:
    outcome["webhook"] = webhook_origin(config.url)
    answer = probe.post(
        str(config.url),
        json={"release": call.release, "run_id": call.run_id, "reasons": call.reasons},
        headers=bearer(call.secret),
        timeout=config.timeout_s,
        what="the webhook",
    )
    outcome["http_status"] = answer.status
    if answer.redirect:
        outcome["error"] = f"the webhook: {answer.redirect}"
    return 200 <= answer.status < 300
