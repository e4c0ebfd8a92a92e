"""``python -m bench.online``: see ``bench.online.run``."""

from bench.online.run import main

raise SystemExit(main())
