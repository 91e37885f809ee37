"""Run the node agent: ``python -m node_agent --listen 127.0.0.1:8081 --data-dir DIR``.

The token comes from ``--token-file`` (mode 0600 or stricter) or the ``NODE_AGENT_TOKEN``
environment variable, never from the command line (other users can read a process's
arguments). The agent runs as root: it starts every VM's QEMU under an unprivileged uid of its
own and installs the guest egress policy (``node_agent.isolation``); until that policy is proven
it serves its API but refuses to create or start VMs.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import stat
import sys
from pathlib import Path

import uvicorn

from .app import create_app
from .config import DEFAULT_IMAGE_DIR, DEFAULT_MAX_ARCHIVE_BYTES, DEFAULT_VM_UID_RANGE, AgentConfig
from .uids import parse_uid_range

log = logging.getLogger("node_agent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    low, high = DEFAULT_VM_UID_RANGE
    parser = argparse.ArgumentParser(prog="python -m node_agent", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8081", help="HOST:PORT to bind")
    parser.add_argument("--data-dir", type=Path, required=True, help="VM disks, keys, records")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    parser.add_argument("--token-file", type=Path, help="file holding the bearer token (0600)")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    parser.add_argument(
        "--guest-egress",
        choices=("public", "none"),
        default="public",
        help="public: guests reach public addresses only; none: no new outbound connection",
    )
    parser.add_argument(
        "--vm-uid-range",
        type=parse_uid_range,
        default=(low, high),
        metavar="LOW-HIGH",
        help=f"uids for the VMs' QEMU processes, the last one for the self-test "
        f"(default {low}-{high})",
    )
    parser.add_argument(
        "--max-archive-mb",
        type=int,
        default=DEFAULT_MAX_ARCHIVE_BYTES // 2**20,
        help="largest workspace a zip or tar.gz download may hold",
    )
    parser.add_argument(
        "--golden-snapshots",
        choices=("on", "off"),
        default="on",
        help="on: the first create of an image and VM shape builds a snapshot (one background "
        "boot); later creates restore it instead of booting",
    )
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info").lower())
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.max_archive_mb < 1:
        parser.error("--max-archive-mb must be at least 1")
    return args


def read_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            mode = token_file.stat().st_mode
            token = token_file.read_text().strip()
        except OSError as exc:
            sys.exit(f"node_agent: cannot read the token file {token_file}: {exc.strerror}")
        if mode & 0o077:
            sys.exit(
                f"node_agent: the token file {token_file} has mode {stat.S_IMODE(mode):04o}; "
                f"only its owner may read it (chmod 600 {token_file})"
            )
    else:
        token = os.environ.get("NODE_AGENT_TOKEN", "")
    if len(token) < 16:
        sys.exit(
            "node_agent: a token of at least 16 characters is required "
            "(--token-file or NODE_AGENT_TOKEN)"
        )
    return token


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return ("127.0.0.1" if host == "localhost" else host), int(port)


def bind(host: str, port: int) -> socket.socket:
    """The API's socket, bound before start-up so the self-test can check it is out of reach."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        sys.exit(f"node_agent: cannot listen on {host}:{port}: {exc.strerror}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # asyncssh logs every channel at INFO; keep the agent's own lines readable.
    logging.getLogger("asyncssh").setLevel(max(logging.WARNING, logging.root.level))
    host, port = split_listen(args.listen)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    config = AgentConfig(
        data_dir=args.data_dir.resolve(),
        token=read_token(args.token_file),
        image_dir=args.image_dir.resolve(),
        accel=args.accel,
        guest_egress=args.guest_egress,
        vm_uid_range=args.vm_uid_range,
        max_archive_bytes=args.max_archive_mb * 2**20,
        golden_snapshots=args.golden_snapshots == "on",
        listen=((host, port),),
    )
    tls = {}
    if args.tls_cert is not None:
        tls = {"ssl_certfile": str(args.tls_cert), "ssl_keyfile": str(args.tls_key)}
        log.info("serving HTTPS on %s:%s", host, port)
    elif host not in ("127.0.0.1", "::1"):
        log.warning("listening on %s without TLS: use --tls-cert/--tls-key or a private link", host)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            log_level=args.log_level,
            ws="websockets-sansio",
            **tls,  # type: ignore[arg-type]
        )
    )
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
