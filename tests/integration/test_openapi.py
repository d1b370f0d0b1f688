"""center and dispatcher against their own OpenAPI documents (issue #11, item 6): each serves
its document at /openapi.json, and schemathesis, driven by that document against the live
processes of a real cluster, finds no 5xx and no answer the document does not describe (a
status it does not list, a body or a header that does not fit, a valid request refused, an
invalid one accepted).

Bounded and repeatable: a fixed number of examples per operation, generated deterministically
(the same requests every run), no deadline. Both runs together cost ~40 s of CPU (~700
requests); on a machine loaded 8 times over its 2 cores they took 2 minutes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from services.center.config import CenterConfig
from services.center.openapi import document as center_document
from services.dispatcher.openapi import document as dispatcher_document
from services.kit import openapi
from tests.integration.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

RUN_BOUND_S = 420           # a safety net only: a run takes ~1 min; the test asserts no time
# schemathesis's configuration (docs: schemathesis.readthedocs.io, "Configuration").
# `app` is the cluster's app 9 times in 10, so most requests pass authentication and reach
# the handlers; the others exercise unknown apps. Every check runs but use_after_free: DELETE
# of a broadcast cancels the job, whose record stays readable (docs/api.md §2.9), by design.
# Hypothesis's too_slow health check times data generation: off, the machine may be loaded.
CONFIG = """
suppress-health-check = ["too_slow"]

[auth.openapi.apiKey]
bearer = "{key}"

[auth.openapi.adminKey]
bearer = "{admin_key}"

[dictionaries.apps]
values = ["{app}"]

[parameters]
"path.app" = {{ dictionary = "apps", probability = 0.9 }}
"query.app" = {{ dictionary = "apps", probability = 0.9 }}

[generation]
deterministic = true
max-examples = {examples}
database = "none"

[phases.stateful]
max-steps = 6
"""
EXAMPLES = {"center": 15, "dispatcher": 20, "admin": 15}
# The admin API runs alone, after the others, on an app of its own: it creates, changes and
# deletes apps and drains rooms, which would pull the cluster's app out from under the runs
# beside it.
ADMIN = "^/v1/admin/"
# The admin API takes any field of the app configuration, whose cross-field rules (heartbeat
# bounds, whsec_ secrets, PEM keys) no JSON Schema states: a body its schema allows may still
# be refused with 400 there, so "a schema-valid request is accepted" is not checked for it.
EXCLUDED = {"": ["use_after_free"], "admin": ["use_after_free", "positive_data_acceptance"]}
FUZZED_APP = "fuzzed-app"
# The fuzzed app has no stored messages and no dead letters, and the fuzzer deletes and
# re-creates it under its broadcast jobs, so these admin routes answer 404 here for almost
# every id: no "missing test data" warning for them (tests/integration/test_console.py drives
# the cases where the id exists).
ADMIN_CONFIG = """
[[operations]]
include-path-regex = "/(messages|dead-letters|broadcasts)/"
warnings = false
"""


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path_factory.mktemp("openapi"), real=True) as c:
        yield c


def base(cluster: Cluster, service: str) -> str:
    return cluster.dispatcher if service == "dispatcher" else cluster.center()


async def test_each_serves_its_document(cluster: Cluster) -> None:
    expected = {"center": center_document(CenterConfig()), "dispatcher": dispatcher_document()}
    async with aiohttp.ClientSession() as http:
        for service, doc in expected.items():
            async with http.get(f"{base(cluster, service)}{openapi.PATH}") as resp:
                assert resp.status == 200 and resp.content_type == "application/json"
                served = await resp.json()
            assert served["openapi"] == "3.1.0"
            assert openapi.documented(served) == openapi.documented(doc), service


def configure(cluster: Cluster, folder: Path, service: str) -> Path:
    folder.mkdir()
    config = folder / "schemathesis.toml"
    config.write_text(CONFIG.format(
        key=cluster.app.api_keys[0], admin_key=cluster.admin_key,
        app=FUZZED_APP if service == "admin" else cluster.app.id, examples=EXAMPLES[service])
        + (ADMIN_CONFIG if service == "admin" else ""))
    return config


async def schemathesis(cluster: Cluster, folder: Path, service: str) -> tuple[int, str]:
    """Run `st run` against `service`'s live document; its exit code and report."""
    config = configure(cluster, folder, service)
    st = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from schemathesis.cli import schemathesis; schemathesis()",
        "--config-file", str(config), "run", f"{base(cluster, service)}{openapi.PATH}",
        "--checks", "all", "--exclude-checks", ",".join(EXCLUDED.get(service, EXCLUDED[""])),
        "--workers", "1",
        "--request-timeout", "30", "--no-color",
        *{"center": ["--exclude-path-regex", ADMIN],
          "admin": ["--include-path-regex", ADMIN]}.get(service, []),
        cwd=folder, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(RUN_BOUND_S):
            out, _ = await st.communicate()
    finally:
        if st.returncode is None:
            st.kill()
            await st.wait()
    return int(st.returncode or 0), f"--- schemathesis against {service}\n" + out.decode(
        errors="replace")


async def test_schemathesis_finds_nothing(cluster: Cluster, tmp_path: Path) -> None:
    # Both at once: each st is one process generating requests, each server another.
    runs = await asyncio.gather(*(schemathesis(cluster, tmp_path / s, s)
                                  for s in ("center", "dispatcher")))
    # The admin run's app exists when it starts, so its paths reach the handlers.
    async with aiohttp.ClientSession() as http, http.post(
            f"{cluster.center()}/v1/admin/apps", json={"id": FUZZED_APP},
            headers={"Authorization": f"Bearer {cluster.admin_key}"}) as resp:
        assert resp.status == 201, await resp.text()
    runs.append(await schemathesis(cluster, tmp_path / "admin", "admin"))
    for code, report in runs:
        print(report[-2500:])
        assert code == 0 and "No issues found" in report, report
