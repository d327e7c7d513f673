import sys

from pollen_cli import main

sys.exit(main())
