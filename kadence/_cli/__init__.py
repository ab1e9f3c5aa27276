"""Click command groups mounted under the argparse ``kadence`` command (kadence/cli.py)."""

# The commands defined beside the group register on it when the package is imported.
from kadence._cli import operations as operations
