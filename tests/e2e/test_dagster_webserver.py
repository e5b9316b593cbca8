"""A real client of the Dagster webserver: launch `retrain_job` through its GraphQL API (the
API the UI uses) against a temporary instance, and wait for it to succeed."""

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.net import free_port

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status assetMaterializations { assetKey { path } } }
  }
}"""
LOCATIONS = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }
"""


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def test_retrain_job_launched_through_graphql_succeeds(tmp_path: Path, sentinel_home: Path) -> None:
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"  # launch at once: no daemon in this test
    )
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: sentinel_dagster.definitions\n"
        f"      working_directory: {ROOT}\n      location_name: sentinel\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "SENTINEL_HOME": str(sentinel_home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port),
         "-w", str(workspace)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait(
            lambda: any(
                e["loadStatus"] == "LOADED"
                for e in _graphql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
            ),
            120,
            "the code location to load",
        )
        params = {
            "selector": {"repositoryLocationName": "sentinel",
                         "repositoryName": "__repository__", "jobName": "retrain_job"},
            "runConfigData": {
                "ops": {"transactions": {"config": {"cards": 600, "days": 28, "seed": 11}}},
                "execution": {"config": {"in_process": {}}},
            },
        }  # fmt: skip
        launched = _graphql(url, LAUNCH, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]

        def finished() -> dict | None:
            run = _graphql(url, STATUS, {"runId": run_id})["runOrError"]
            return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

        run = _wait(finished, 300, "the run to finish")
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert run["status"] == "SUCCESS"
    materialized = {m["assetKey"]["path"][-1] for m in run["assetMaterializations"]}
    assert {"transactions", "transaction_features", "candidate_model",
            "promotion_decision"} <= materialized  # fmt: skip
    assert "model_bundle" not in materialized  # retrain_job leaves publishing to the automation
