"""The import graph of pingr/ points one way: no cycle, nothing imported after code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_cycle_not_even_through_imports_inside_functions():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "importgraph.py")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
    assert "cycles (strongly connected groups of modules): 0;" in out.stdout
    assert "cycles counting the imports inside functions too: 0;" in out.stdout
    assert "module-level imports after code: 0" in out.stdout


def test_config_layer_imports_nothing_that_runs():
    # Loading and checking a config file must not pull in the App, the API or any part.
    code = ("import sys, pingr.config; bad = [m for m in sys.modules if m.startswith("
            "('pingr.app', 'pingr.api', 'pingr.store', 'pingr.monitor', 'pingr.mqtt.publisher',"
            " 'pingr.notify.notifier', 'pingr.outputs.manager', 'fastapi', 'sqlmodel', "
            "'apprise', 'paho', 'gpiozero'))]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
