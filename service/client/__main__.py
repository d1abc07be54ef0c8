import sys

from service.client.cli import main

sys.exit(main())
