"""``python -m scripts.local_stack`` (what ``make local`` runs), from the repository root."""

import sys

from scripts.local_stack.main import main

sys.exit(main())
