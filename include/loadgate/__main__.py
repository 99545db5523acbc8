"""``python -m loadgate``: the loadgate command."""

from loadgate.cli import main

raise SystemExit(main())
