"""The public acceptance check (../shared/contract/check_seeds.py) against the installed console script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

CHECK = ROOT.parent / "shared" / "contract" / "check_seeds.py"


@pytest.mark.skipif(not CHECK.is_file(), reason=f"the shared contract check is not here: {CHECK} "
                                                "(it lives next to the repository, in ../shared)")
def test_check_seeds_passes(exe: str, tmp_path: Path) -> None:
    # the check makes its folder with tempfile.mkdtemp(); keep it inside pytest's tmp_path
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(CHECK), exe], capture_output=True, text=True, timeout=300, env=env)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr
    m = re.fullmatch(r"(\d+) passed, (\d+) failed", lines[-1])
    assert m, proc.stdout + proc.stderr
    assert (int(m.group(1)) > 0, int(m.group(2))) == (True, 0), proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert any(tmp_path.glob("monitor-contract-*/monitor.db"))  # it really ran here
