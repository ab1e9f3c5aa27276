"""Install the Restate peer into a scratch directory (never into Kadence's dependencies).

    python -m benchmarks.peers.restate.install [--dir DIR]

``DIR/npm``: the npm package ``@restatedev/restate-server`` (it ships the server binary for
the platform as an optional dependency); ``DIR/venv``: a virtual environment with PyPI's
``restate-sdk`` and ``hypercorn``, which serve ``service.py``. Idempotent: what is there
already is kept. Exits non-zero, saying which, when npm or pip cannot fetch a package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

SERVER_PACKAGE = "@restatedev/restate-server"
SERVER_VERSION = "1.7.12"
PYTHON_PACKAGES = ("restate-sdk==1.3.0", "hypercorn==0.18.0")
DEFAULT_DIR = Path(os.environ.get("KADENCE_PEERS_DIR", "/tmp/kadence-peers")) / "restate"


def server_binary(root: Path) -> Path:
    """The restate-server binary the npm package installed for this platform."""
    found = sorted((root / "npm" / "node_modules" / "@restatedev").glob("restate-server-*/bin/restate-server"))
    if not found:
        raise FileNotFoundError(f"no restate-server binary under {root}/npm: run python -m {__name__}")
    return found[0]


def venv_python(root: Path) -> Path:
    return root / "venv" / "bin" / "python"


def install(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    versions = json.loads(subprocess.run(["npm", "view", SERVER_PACKAGE, "versions", "--json"], check=True,
                                         capture_output=True, text=True).stdout)
    if SERVER_VERSION not in versions:
        raise SystemExit(f"npm has no {SERVER_PACKAGE}@{SERVER_VERSION} (it has {versions[-5:]})")
    try:
        server_binary(root)
    except FileNotFoundError:
        subprocess.run(["npm", "install", "--no-save", "--prefix", str(root / "npm"),
                        f"{SERVER_PACKAGE}@{SERVER_VERSION}"], check=True)
    print(f"restate-server: {server_binary(root)}", flush=True)
    if not venv_python(root).exists():
        venv.create(root / "venv", with_pip=True)
    subprocess.run([str(venv_python(root)), "-m", "pip", "install", "-q", *PYTHON_PACKAGES], check=True)
    print(f"restate-sdk and hypercorn: {root / 'venv'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"scratch directory (default {DEFAULT_DIR})")
    try:
        install(parser.parse_args().dir)
    except subprocess.CalledProcessError as exc:
        sys.exit(f"could not install the Restate peer: {' '.join(map(str, exc.cmd))} exited with {exc.returncode}")


if __name__ == "__main__":
    main()
