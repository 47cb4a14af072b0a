#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""dropproxy.py: a TCP proxy on loopback that drops one upload mid-body, once.

  dropproxy.py --target 127.0.0.1:PORT --port-file F --log F [--after BYTES] [--match REGEX]

Forwards every connection to the target. The first request whose request line matches --match
(default: a PUT of a pack object) has its connection closed, both ways, once --after bytes
(default 4 MiB) of it have gone through; the proxy writes "dropped PATH after N bytes" to --log
and forwards everything after that untouched. Only loopback addresses are accepted.
"""
import argparse
import asyncio
import ipaddress
import re
import signal

CHUNK = 64 * 1024


def loopback(hostport):
	host, port = hostport.rsplit(":", 1)
	if not ipaddress.ip_address(host).is_loopback:
		raise SystemExit("dropproxy.py: only loopback addresses")
	return host, int(port)


async def main():
	ap = argparse.ArgumentParser()
	ap.add_argument("--target", required=True)
	ap.add_argument("--port-file", required=True)
	ap.add_argument("--log", required=True)
	ap.add_argument("--after", type=int, default=4 << 20)
	ap.add_argument("--match", default=r"PUT [^ ]*/packs/[^ ]* HTTP/1\.1")
	a = ap.parse_args()
	thost, tport = loopback(a.target)
	pattern = re.compile(a.match.encode())
	state = {"dropped": False}

	async def pipe(reader, writer, watch, peer_writer):
		counting, seen, path = False, 0, b""
		try:
			while True:
				data = await reader.read(CHUNK)
				if not data:
					break
				if watch and not state["dropped"]:
					if not counting:
						m = pattern.search(data)
						if m:
							counting, path = True, m.group(0)
							seen = len(data) - m.start()
					else:
						seen += len(data)
					if counting and seen >= a.after:
						state["dropped"] = True
						with open(a.log, "a") as f:
							f.write("dropped %s after %d bytes\n" % (path.decode(errors="replace"), seen))
						writer.transport.abort()
						peer_writer.transport.abort()
						return
				writer.write(data)
				await writer.drain()
		except (ConnectionError, OSError):
			pass
		finally:
			try:
				writer.close()
			except Exception:
				pass

	async def handle(creader, cwriter):
		try:
			sreader, swriter = await asyncio.open_connection(thost, tport)
		except OSError:
			cwriter.close()
			return
		await asyncio.gather(pipe(creader, swriter, True, cwriter), pipe(sreader, cwriter, False, swriter))

	server = await asyncio.start_server(handle, "127.0.0.1", 0)
	with open(a.port_file, "w") as f:
		f.write("%d\n" % server.sockets[0].getsockname()[1])
	stop = asyncio.Event()
	loop = asyncio.get_running_loop()
	for s in (signal.SIGTERM, signal.SIGINT):
		loop.add_signal_handler(s, stop.set)
	async with server:
		await stop.wait()


asyncio.run(main())
