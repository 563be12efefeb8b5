"""``grader.jail.hide_paths`` on real mounts: what the student process sees, for the layouts grading meets.

Each case runs ``hide_paths`` in a fresh mount namespace (``unshare --mount``, root only, as in
CI and on Gradescope) over a small tree, then lists what is still readable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
from pathlib import Path
from grader.jail import Isolation, hide_paths
root = Path(sys.argv[1])
spec = json.loads(sys.argv[2])
iso = Isolation(mount_namespace=True)
hide_paths(iso, [root / p for p in spec["hide"]], [root / p for p in spec["keep"]])
print(json.dumps({p: (root / p).exists() for p in spec["probe"]}))
"""

LAYOUTS = {
    # A source checkout inside a hidden temporary folder, its venv inside the checkout (a CI clone in /tmp).
    "checkout in a hidden temp folder": {
        "files": ["tmp/ci/.venv/lib/numpy/testing.py", "tmp/ci/grader/inputs.py", "tmp/ci/reference/pretrained.py",
                  "tmp/scratch/work/pretrained.py", "tmp/other/secret.txt"],
        "hide": ["tmp", "tmp/ci", "tmp/ci/grader", "tmp/ci/reference"],
        "keep": ["tmp/ci/.venv", "tmp/ci/.venv/lib", "tmp/scratch"],
        "visible": ["tmp/ci/.venv/lib/numpy/testing.py", "tmp/scratch/work/pretrained.py"],
        "hidden": ["tmp/ci/grader/inputs.py", "tmp/ci/reference/pretrained.py", "tmp/other/secret.txt"],
    },
    # The grader installed (not editable) inside the kept site-packages.
    "grader inside the kept site-packages": {
        "files": ["venv/site-packages/numpy/core.py", "venv/site-packages/grader/inputs.py",
                  "venv/site-packages/reference/pretrained.py", "home/root/token"],
        "hide": ["venv/site-packages/grader", "venv/site-packages/reference", "home"],
        "keep": ["venv", "venv/site-packages"],
        "visible": ["venv/site-packages/numpy/core.py"],
        "hidden": ["venv/site-packages/grader/inputs.py", "venv/site-packages/reference/pretrained.py",
                   "home/root/token"],
    },
    # A checkout outside any hidden folder, with its venv inside (this repository's own layout).
    "checkout beside the venv": {
        "files": ["work/main/.venv/lib/torch.py", "work/main/grader/points.toml", "work/main/tests/bank.py"],
        "hide": ["work/main", "work/main/grader"],
        "keep": ["work/main/.venv"],
        "visible": ["work/main/.venv/lib/torch.py"],
        "hidden": ["work/main/grader/points.toml", "work/main/tests/bank.py"],
    },
}  # fmt: skip


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_hidden_paths_are_gone_and_kept_paths_stay_readable(tmp_path: Path, name: str):
    """Everything under a hidden path is gone, except the kept paths, which stay readable."""
    layout = LAYOUTS[name]
    for rel in layout["files"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    spec = {**layout, "probe": layout["visible"] + layout["hidden"]}
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", PROBE, str(tmp_path),
         json.dumps(spec)], capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen == {**dict.fromkeys(layout["visible"], True), **dict.fromkeys(layout["hidden"], False)}
    assert all((tmp_path / rel).exists() for rel in layout["files"]), "the mounts leaked out of the namespace"
