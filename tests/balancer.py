"""A TCP load balancer for the several-hosts tests: each connection goes to the next backend in
turn (round robin), bytes pass through untouched (so the ``Host`` header the clients signed
arrives as they sent it), and a backend that refuses a connection is skipped for that one.

    python -m tests.balancer --listen 0.0.0.0:8000 10.0.0.2:8000 10.0.0.3:8000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


async def serve(listen: tuple[str, int], backends: list[tuple[str, int]]) -> None:
    turn = itertools.cycle(range(len(backends)))

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        first = next(turn)
        for n in range(len(backends)):
            host, port = backends[(first + n) % len(backends)]
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=5)
                break
            except (OSError, TimeoutError):
                continue
        else:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, writer), _pipe(reader, client_writer))

    server = await asyncio.start_server(handle, *listen)
    print(f"balancing {listen[0]}:{listen[1]} over {len(backends)} backends", flush=True)
    async with server:
        await server.serve_forever()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", type=_address, required=True)
    parser.add_argument("backends", type=_address, nargs="+")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.listen, args.backends))
