"""scripts/genproto.py --check: the committed generated code matches proto/ (STYLE.md §12)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_not_stale() -> None:
    result = subprocess.run([sys.executable, "scripts/genproto.py", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _copy_tree(dest: Path) -> Path:
    """A throwaway copy of what genproto reads and writes, so the guard can be seen failing."""
    for rel in ("scripts/genproto.py", *(str(p.relative_to(ROOT)) for p in
                                         (ROOT / "proto").rglob("*.proto")),
                *(str(p.relative_to(ROOT))
                  for pb in ("services/kit/pb", "sdk/python/pushwire_protocol/pb")
                  for p in (ROOT / pb).glob("*.py*"))):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / rel).read_bytes())
    return dest


def _run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "scripts/genproto.py", *args], cwd=root,
                          capture_output=True, text=True, timeout=60)


def test_check_fails_on_hand_edit_and_regeneration_fixes_it(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    assert _run(root, "--check").returncode == 0
    edited = root / "services/kit/pb/common_pb2.pyi"
    edited.write_text(edited.read_text() + "# hand edit\n")
    (root / "services/kit/pb/stray_pb2.py").write_text("x = 1\n")
    result = _run(root, "--check")
    assert result.returncode == 1
    assert "common_pb2.pyi" in result.stdout and "stray_pb2.py" in result.stdout
    assert _run(root).returncode == 0
    assert _run(root, "--check").returncode == 0
    assert not (root / "services/kit/pb/stray_pb2.py").exists()


def test_check_fails_when_a_proto_changes(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    proto = root / "proto/pushwire/common.proto"
    proto.write_text(proto.read_text() + "\nmessage Extra { string note = 1; }\n")
    result = _run(root, "--check")
    assert result.returncode == 1 and "common_pb2.py" in result.stdout


def test_the_client_protocol_has_no_grpc_stubs(tmp_path: Path) -> None:
    """wire.proto goes to the SDK distribution, which must import without grpcio."""
    root = _copy_tree(tmp_path)
    proto = root / "proto/pushwire/wire.proto"
    proto.write_text(proto.read_text() + "\nmessage Extra { string note = 1; }\n")
    result = _run(root, "--check")
    assert result.returncode == 1 and "pushwire_protocol/pb/wire_pb2.py" in result.stdout
    assert _run(root).returncode == 0
    generated = root / "sdk/python/pushwire_protocol/pb"
    assert sorted(p.name for p in generated.iterdir()) == \
        ["__init__.py", "wire_pb2.py", "wire_pb2.pyi"]
    assert not (root / "services/kit/pb/wire_pb2.py").exists()
