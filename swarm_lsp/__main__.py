import sys

from swarm_lsp.cli import main

sys.exit(main())
