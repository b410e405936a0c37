"""`python -m todo_api` is the `todo-api` command."""

import sys

from todo_api.cli import main

sys.exit(main())
