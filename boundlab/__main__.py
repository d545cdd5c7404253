import sys

from boundlab.cli import main

sys.exit(main())
