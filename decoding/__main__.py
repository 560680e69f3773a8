"""``python -m decoding`` is the ``decoding`` command."""

from decoding.cli import main

raise SystemExit(main())
