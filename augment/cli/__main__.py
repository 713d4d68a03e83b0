"""`python -m augment.cli`: the same as the `vmarket` console script."""
import sys

from augment.cli import main

if __name__ == "__main__":
    sys.exit(main())
