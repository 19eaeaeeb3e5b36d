import sys

from edgedistill.cli import main

sys.exit(main())
