"""``python -m services.visibility``: the visibility projection's faust app (see stream.py)."""

from .stream import main

main()
