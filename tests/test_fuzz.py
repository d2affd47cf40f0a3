"""Property-based fuzzing of the whole OpenAPI document (schemathesis) against a real `pingr run`,
inside a network namespace this test creates: zero 5xx, zero schema violations, still serving."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
#: Examples per operation: a few minutes in all on a 2-core machine.
EXAMPLES = int(os.environ.get("PINGR_FUZZ_EXAMPLES", "8"))


def test_openapi_fuzzing_finds_no_5xx_and_no_schema_violation(tmp_path):
    st = Path(sys.executable).with_name("schemathesis")
    if not st.exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[test]' installs it)")
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to create a private network namespace")
    proc = subprocess.run(["unshare", "--net", "--", "sh", str(HERE / "fuzz_netns.sh"),
                           str(tmp_path), sys.executable, str(st), str(EXAMPLES)],
                          capture_output=True, text=True, timeout=900)
    report = (tmp_path / "schemathesis.txt").read_text() if (
        tmp_path / "schemathesis.txt").exists() else ""
    log = (tmp_path / "pingr.log").read_text() if (tmp_path / "pingr.log").exists() else ""
    assert proc.returncode == 0, (f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}\n"
                                  f"{report[-6000:]}\n--- pingr log ---\n{log[-3000:]}")
    assert "passed" in report.lower()
