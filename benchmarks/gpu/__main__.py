"""``python -m facegraph.benchmarks.gpu``: see benchmarks/gpu/run.py."""

import sys

from facegraph.benchmarks.gpu.run import main

sys.exit(main())
