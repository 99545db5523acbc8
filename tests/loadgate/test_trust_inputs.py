"""Inputs that decide where things are written or how long things wait get a clear answer
before anything happens: one run folder per run id; every numeric option of the ``loadgate``
command checked by argparse before a file is created or a request sent."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgate.artifacts import MAX_SLUG, RunArtifacts, safe_name

# --- run folders ----------------------------------------------------------------------------


def test_two_run_ids_never_share_a_folder(tmp_path) -> None:
    a = RunArtifacts(tmp_path, "manual__2026-01-01T00:00:00+00:00")
    b = RunArtifacts(tmp_path, "manual__2026-01-01T00-00-00-00-00")
    assert a.root != b.root
    a.write_json("run.json", {"run": "a"})
    assert b.read_json("run.json") is None
    # readable names: a safe id is its own folder, an Airflow id its slug plus a short hash
    assert b.root.name == "manual__2026-01-01T00-00-00-00-00"
    assert re.fullmatch(r"manual__2026-01-01T00-00-00-00-00~[0-9a-f]{12}", a.root.name)


@pytest.mark.parametrize("run_id", ["r1", "scheduled__2026-01-01", "a.b=c_d-e"])
def test_a_safe_run_id_keeps_its_name(run_id: str) -> None:
    assert safe_name(run_id) == run_id


@pytest.mark.parametrize("run_id", ["", "..", "::", "-."])
def test_an_id_without_a_name_is_refused(run_id: str) -> None:
    with pytest.raises(ValueError, match="empty folder name"):
        safe_name(run_id)


def _name_or_none(run_id: str) -> str | None:
    try:
        return safe_name(run_id)
    except ValueError:
        return None


IDS = st.one_of(
    st.text(max_size=300),
    st.text(alphabet="abc:+-._~T0", max_size=20),
    st.from_regex(r"manual__20\d\d-0\d-0\dT0\d[:-]00[:-]00[+-]00[:-]00", fullmatch=True),
)


@settings(max_examples=500, deadline=None)
@given(a=IDS, b=IDS)
def test_folder_names_are_unique_per_run_id_and_safe(a: str, b: str) -> None:
    x, y = _name_or_none(a), _name_or_none(b)
    for name in (x, y):
        if name is not None:
            assert re.fullmatch(r"[A-Za-z0-9._=~-]+", name) and name not in (".", "..")
            assert name[0] not in "-." and len(name) <= MAX_SLUG + 13
    if a != b and x is not None:
        assert x != y
