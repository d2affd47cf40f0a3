"""SD-card writes in real time: sectors that reach a block device, journal and all.

`bench.storage` counts bytes handed to write() in accelerated time. What wears a card is what
the kernel finally writes: page-cache writeback of partly filled pages again and again, and the
ext4 journal's metadata blocks (a file whose size or mtime changes every second costs a journal
commit every 5 s). Those depend on real time, so this benchmark runs real `pingr run` processes,
each on its own freshly made ext4 file system on a loop device, and reads the device's "sectors
written" counter (/sys/block/loopN/stat) — nothing else writes there.

Variants, side by side in the same minutes (same machine noise):
- default under systemd: database on the card, spool in RAM (RUNTIME_DIRECTORY, /run/pingr);
- spool on the card (what you get without systemd, or with storage.spool_dir on the card);
- reference: one commit per second (the pre-spool design: commit_interval 1s).

Needs root (losetup/mount). 50 ICMP targets on loopback addresses at 30 s, as in bench.storage.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import heading, mb, row

TARGETS = 50


def _device_sectors(dev: str) -> int:
    return int(Path(f"/sys/block/{Path(dev).name}/stat").read_text().split()[6])


def _make_fs(work: Path, name: str) -> tuple[str, Path]:
    img, mnt = work / f"{name}.img", work / name
    mnt.mkdir()
    subprocess.run(["truncate", "-s", "256M", str(img)], check=True)
    # Default ext4 options as Raspberry Pi OS formats its root (journal, 4 KiB blocks).
    subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], check=True)
    subprocess.run(["mount", "-o", "loop,noatime", str(img), str(mnt)], check=True)
    dev = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(mnt)], check=True,
                         capture_output=True, text=True).stdout.strip()
    return dev, mnt


def main(minutes: float = 20.0) -> dict:
    if os.geteuid() != 0 or not shutil.which("losetup"):
        print("card: skipped — needs root and losetup to make loop-device file systems")
        return {}
    heading(f"Card writes in real time: {TARGETS} ICMP targets at 30 s, {minutes:g} min, "
            "sectors written to each variant's own ext4 loop device")
    work = Path(tempfile.mkdtemp(prefix="pingr-card-"))
    ram = Path(tempfile.mkdtemp(prefix="pingr-card-ram-", dir="/dev/shm"))
    variants = {
        "default: spool in RAM (/run/pingr), commit 10m": {"spool": "ram", "commit": "10m"},
        "spool on the card, commit 10m": {"spool": "card", "commit": "10m"},
        "reference: commit every 1s (before the spool)": {"spool": "ram", "commit": "1s"},
    }
    procs, devs, mounts = {}, {}, []
    try:
        for i, (label, v) in enumerate(variants.items()):
            dev, mnt = _make_fs(work, f"fs{i}")
            mounts.append(mnt)
            devs[label] = dev
            cfg = {
                "host": "127.0.0.1", "port": 0, "auth": {"api_key": "b" * 32},
                "storage": {"path": str(mnt / "pingr.db"), "commit_interval": v["commit"],
                            "spool_dir": str(ram / f"v{i}") if v["spool"] == "ram"
                            else str(mnt)},
                "targets": [{"type": "icmp", "name": f"lo{j}", "host": f"127.0.3.{j + 1}",
                             "interval": "30s"} for j in range(TARGETS)],
            }
            path = work / f"v{i}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            procs[label] = subprocess.Popen(
                [sys.executable, "-m", "pingr", "run", "--config", str(path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(60)  # start-up: tables created, first probes, first spool writes
        before = {label: _device_sectors(dev) for label, dev in devs.items()}
        t0 = time.monotonic()
        time.sleep(minutes * 60)
        elapsed = time.monotonic() - t0
        after = {label: _device_sectors(dev) for label, dev in devs.items()}
        scale = 86400 / elapsed
        out = {}
        ref = (after[list(variants)[2]] - before[list(variants)[2]]) * 512 * scale
        for label in variants:
            per_day = (after[label] - before[label]) * 512 * scale
            out[label] = per_day
            row(label, f"{mb(per_day)}/day  ({per_day / ref:.3f} of the reference)"
                if ref else f"{mb(per_day)}/day")
        print(f"  (measured over {elapsed / 60:.1f} min after a 1 min start-up, scaled to a day;"
              " the databases are new, so retention had nothing to delete)")
        return out
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for mnt in mounts:
            subprocess.run(["umount", str(mnt)], check=False)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(ram, ignore_errors=True)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 20.0)
