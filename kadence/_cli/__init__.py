"""Click command groups mounted under the argparse ``kadence`` command (kadence/cli.py)."""
