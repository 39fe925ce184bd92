"""``python -m bench.cluster``: see ``bench/cluster/run.py``."""

from bench.cluster.run import main

raise SystemExit(main())
