"""A wss:// client for ringway's TLS tests, on Python's `websockets` and `ssl` (third-party code
to ringway). Exits 0 only when every check passed.

    wss_client.py echo URL CAFILE     messages of edge sizes and 1 MiB, a ping, Close 1000
    wss_client.py route URL CAFILE    connect to 127.0.0.1 whatever URL's host (which is still the
                                      SNI name and the Host), send "ping", print the echo or
                                      the HTTP status of the refusal
    wss_client.py reload URL CAFILE   open a tunnel, print "ready", wait for a line on stdin,
                                      then echo on the same tunnel and print the common name of
                                      the certificate a new connection gets
"""

import asyncio
import os
import ssl
import sys

import websockets


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def echo(ws, payload):
    await ws.send(payload)
    got = b""
    while len(got) < len(payload):
        got += await asyncio.wait_for(ws.recv(), 20)
    assert got == payload, f"echo of {len(payload)} bytes differs"


def common_name(ws):
    cert = ws.transport.get_extra_info("ssl_object").getpeercert()
    for rdn in cert["subject"]:
        for key, value in rdn:
            if key == "commonName":
                return value
    return "?"


async def main(mode, url, cafile):
    ctx = context(cafile)
    if mode == "echo":
        async with websockets.connect(url, ssl=ctx, max_size=None) as ws:
            alpn = ws.transport.get_extra_info("ssl_object").selected_alpn_protocol()
            assert alpn == "http/1.1", alpn
            for size in (0, 1, 125, 126, 65535, 65536):
                await echo(ws, os.urandom(size) if size else b"")
            await echo(ws, os.urandom(1 << 20))
            pong = await ws.ping(b"tls")
            await asyncio.wait_for(pong, 10)
            await ws.close(1000)
            print("ok", ws.close_code)
    elif mode == "route":
        try:
            async with websockets.connect(url, ssl=ctx, host="127.0.0.1") as ws:
                await ws.send(b"ping")
                print("echo", (await asyncio.wait_for(ws.recv(), 10)).decode())
        except websockets.exceptions.InvalidStatus as e:
            print("refused", e.response.status_code)
    elif mode == "reload":
        async with websockets.connect(url, ssl=ctx) as first:
            await echo(first, b"before")
            print("ready", common_name(first), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            await echo(first, b"after the reload, same tunnel")
            async with websockets.connect(url, ssl=ctx) as second:
                await echo(second, b"new tunnel")
                print("new", common_name(second), flush=True)
            print("old", common_name(first), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
