"""Run pingr as `python -m pingr`."""

from pingr.cli import main

raise SystemExit(main())
