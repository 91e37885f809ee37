"""Run the node agent: ``python -m node_agent --listen 127.0.0.1:8081 --data-dir DIR``.

The token comes from ``--token-file`` or the ``NODE_AGENT_TOKEN`` environment variable, never
from the command line (other users can read a process's arguments).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from .app import create_app
from .config import DEFAULT_IMAGE_DIR, AgentConfig

log = logging.getLogger("node_agent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m node_agent", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8081", help="HOST:PORT to bind")
    parser.add_argument("--data-dir", type=Path, required=True, help="VM disks, keys, records")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    parser.add_argument("--token-file", type=Path, help="file holding the bearer token")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info").lower())
    return parser.parse_args(argv)


def read_token(token_file: Path | None) -> str:
    token = token_file.read_text().strip() if token_file else os.environ.get("NODE_AGENT_TOKEN", "")
    if len(token) < 16:
        sys.exit(
            "node_agent: a token of at least 16 characters is required "
            "(--token-file or NODE_AGENT_TOKEN)"
        )
    return token


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # asyncssh logs every channel at INFO; keep the agent's own lines readable.
    logging.getLogger("asyncssh").setLevel(max(logging.WARNING, logging.root.level))
    config = AgentConfig(
        data_dir=args.data_dir.resolve(),
        token=read_token(args.token_file),
        image_dir=args.image_dir.resolve(),
        accel=args.accel,
    )
    host, port = split_listen(args.listen)
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s: put TLS in front or restrict it to the web host", host)
    uvicorn.run(
        create_app(config), host=host, port=port, log_level=args.log_level, ws="websockets-sansio"
    )


if __name__ == "__main__":
    main()
