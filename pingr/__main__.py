"""Run pingr as `python -m pingr`."""

from pingr.launch import main

raise SystemExit(main())
