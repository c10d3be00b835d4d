"""``python -m ggnet_fast.cli`` (as ``torchrun ... -m ggnet_fast.cli train`` uses it)."""
import sys

from . import main

sys.exit(main())
