"""Two tiny upstreams for slow-upstream.sh: on the first port every request is answered after
SLOW_SECONDS (GET /health at once, as a service whose work is slow but whose process is fine);
on the second, at once. Usage: upstream.py SLOW_PORT FAST_PORT SLOW_SECONDS"""

import asyncio
import sys

from aiohttp import web

slow_port, fast_port, slow_seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])


async def slow(request):
    if request.path != "/health":
        await asyncio.sleep(slow_seconds)
    return web.Response(text="slow ok")


async def fast(request):
    return web.Response(text="fast ok")


async def main():
    for handler, port in ((slow, slow_port), (fast, fast_port)):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print("upstreams listening", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
