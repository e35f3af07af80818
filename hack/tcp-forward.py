#!/usr/bin/env python3
"""Forwards TCP connections from LISTEN (host:port) to TARGET (host:port), both ways, until
killed. hack/dev-env.sh runs one so that pods reach the loopback-only API server through the
`kubernetes` Service, as in any cluster: 10.96.0.1:443 -> the node's bridge address -> here ->
127.0.0.1. TLS passes through untouched (the server certificate names 10.96.0.1).

  tcp-forward.py 10.244.0.1:16443 127.0.0.1:16443
"""
import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def main(listen, target):
    lhost, lport = listen.rsplit(":", 1)
    thost, tport = target.rsplit(":", 1)

    async def handle(client_r, client_w):
        try:
            server_r, server_w = await asyncio.open_connection(thost, int(tport))
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    server = await asyncio.start_server(handle, lhost, int(lport), reuse_address=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} LISTEN_HOST:PORT TARGET_HOST:PORT")
    asyncio.run(main(sys.argv[1], sys.argv[2]))
