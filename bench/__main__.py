"""`python -m bench [names…]`: run the benchmark suite and print every figure."""

from __future__ import annotations

import argparse
import os
import platform
import time

from bench import (
    alertstatus,
    anchor,
    card,
    fleet,
    httpcost,
    idle,
    lazy,
    memory,
    mixed,
    probes,
    soak,
    startup,
    storage,
    web,
)

ALL = ("icmp", "http", "alert-status", "storage", "card", "memory", "idle", "foreign", "startup",
       "lazy", "simplemonitor", "mixed", "http-cost", "fleet", "web")
#: Run only when named: ten minutes of abuse.
EXTRA = ("soak",)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *ALL, *EXTRA],
        default=[],
        help=f"benchmarks to run (default: all of {', '.join(ALL)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter runs (memory 30 s, write budget 1 simulated hour, 7 days, card 5 min, "
        "idle 1 window of 60 s, foreign 1 pair of 60 s, startup 3 runs, simplemonitor 1 round, "
        "mixed 60 s, fleet 50 and 200 nodes, 20 s windows, web 20 rounds and 70 s of memory)",
    )
    args = parser.parse_args()
    names = args.names or list(ALL)
    print(
        f"pingr bench {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
        f"{platform.machine()} {platform.system()} {platform.release()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; loopback only"
    )
    if os.geteuid() != 0:
        print("note: not root; ICMP uses unprivileged sockets if allowed, fping needs -i >= 1 ms")
    if "icmp" in names:
        probes.icmp()
    if "http" in names:
        probes.http()
    if "alert-status" in names:
        alertstatus.main(seconds=4 if args.quick else 8)
    if "storage" in names:
        storage.main(hours=1.0 if args.quick else 3.0, days=7 if args.quick else 30)
    if "card" in names:
        card.main(minutes=5 if args.quick else 20)
    if "memory" in names:
        memory.main(seconds=30 if args.quick else 120)
    if "idle" in names:
        idle.main(windows=1 if args.quick else 3)
    if "foreign" in names:
        idle.foreign(seconds=60, pairs=1 if args.quick else 3)
    if "startup" in names:
        startup.main(runs=3 if args.quick else 5)
    if "lazy" in names:
        lazy.main(runs=1 if args.quick else 3)
    if "simplemonitor" in names:
        anchor.main(rounds=1 if args.quick else 3)
    if "mixed" in names:
        mixed.main(seconds=60 if args.quick else 120)
    if "http-cost" in names:
        httpcost.main(n=1000 if args.quick else 2000, rounds=3)
    if "fleet" in names:
        if args.quick:
            fleet.main(sizes=(50, 200), seconds=20, probes=5, mesh=(200,))
        else:
            fleet.main()
    if "soak" in names:
        soak.main(seconds=60 if args.quick else 600)
    if "web" in names:
        web.main(*((20, 30, 40) if args.quick else (60, 60, 90)))


if __name__ == "__main__":
    main()
