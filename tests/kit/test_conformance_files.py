"""scripts/conformance.py --check: the committed conformance vectors are what the code gives.

The loaders (tests/sdk/test_conformance.py, tests/room/test_conformance.py, tests/kit/
test_token.py, tests/coordinator/test_webhooks.py) hold the code to the files; this holds the
files to the generator, so a vector added or changed there cannot be forgotten."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.vectors import FOLDER, ROOT

NAMES = ("packets", "close_codes", "backoff", "tokens", "webhooks", "errors")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "scripts/conformance.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_committed_files_are_not_stale() -> None:
    result = _run("--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_fails_on_a_hand_edit_and_regeneration_fixes_it(tmp_path: Path) -> None:
    for name in NAMES:
        shutil.copy(FOLDER / f"{name}.json", tmp_path)
    edited = tmp_path / "backoff.json"
    content = json.loads(edited.read_text())
    content["sequences"][0]["steps"][0]["delay_ms"] += 1
    edited.write_text(json.dumps(content, indent=1, ensure_ascii=False) + "\n")
    stale = _run("--check", "--out", str(tmp_path))
    assert stale.returncode == 1 and "backoff.json" in stale.stderr
    assert "packets.json" not in stale.stderr
    assert _run("--out", str(tmp_path)).returncode == 0
    assert edited.read_text() == (FOLDER / "backoff.json").read_text()


def test_the_test_keys_are_marked_and_only_read() -> None:
    keys = sorted(p.name for p in (FOLDER / "keys").iterdir())
    assert keys == ["test-only-es256.pem", "test-only-rs256.pem"]
    assert "TEST ONLY" in (FOLDER / "README.md").read_text()
