"""`python -m bench [names…]`: run the benchmark suite and print every figure."""

from __future__ import annotations

import argparse
import os
import platform
import time

from bench import alertstatus, card, memory, probes, storage, web

ALL = ("icmp", "http", "alert-status", "storage", "card", "memory", "web")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *ALL],
        default=[],
        help=f"benchmarks to run (default: all of {', '.join(ALL)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter runs (memory 30 s, write budget 1 simulated hour, 7 days, card 5 min, "
        "web 20 rounds and 70 s of memory)",
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
    if "web" in names:
        web.main(*((20, 30, 40) if args.quick else (60, 60, 90)))


if __name__ == "__main__":
    main()
