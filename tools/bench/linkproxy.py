#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""linkproxy.py: a TCP proxy that behaves like a network link, for benchmarks on loopback.

These kernels have no `tc netem` (only TBF/HTB, which shape rate but add no delay), so the
cold-runner benchmark puts this proxy between a client and a loopback server to model a
data-centre or cross-region link:

  * one-way delay D in each direction: a byte read at time t is written at t + D at the earliest;
  * a rate R per connection and per direction (a token bucket of one packet's worth): a segment of
    n bytes occupies the link for n / R seconds, queued behind the ones before it;
  * the TCP handshake costs one round trip: the client's first bytes leave no earlier than 2 D
    after it connected, and the upstream connection is opened D after that (when the SYN would
    arrive), so a new connection costs what it costs on a real link;
  * a window: at most WINDOW bytes in flight per direction (reading stops until they drain), so
    memory is bounded and a slow reader slows the sender, as TCP flow control does.

Usage:
  linkproxy.py --listen 127.0.0.1:0 --target 127.0.0.1:8080 --delay-ms 15 --rate-mbit 200 \
      [--port-file F] [--log F]

It prints "listening HOST PORT" on stdout once it accepts (and writes PORT to --port-file), runs
until SIGTERM or SIGINT, and then writes one line of totals to --log: connections, bytes each
way. Only loopback addresses are accepted for both ends.
"""
import argparse
import asyncio
import ipaddress
import signal
import sys
import time

CHUNK = 64 * 1024


class Totals:
	def __init__(self):
		self.conns = 0
		self.up = 0
		self.down = 0


def loopback(addr):
	host, _, port = addr.rpartition(":")
	host = host.strip("[]")
	if host == "localhost":
		host = "127.0.0.1"
	if not ipaddress.ip_address(host).is_loopback:
		raise argparse.ArgumentTypeError(f"{addr}: only loopback addresses are allowed")
	return host, int(port)


async def pump(reader, writer, earliest, delay, rate, window, count):
	"""Copy reader to writer as the link would: delay, rate, window. earliest: the first byte
	may not leave before this monotonic time (the handshake)."""
	loop = asyncio.get_running_loop()
	queue = asyncio.Queue()
	inflight = 0
	drained = asyncio.Event()
	drained.set()
	link_free = earliest  # when the link has sent everything queued so far

	async def deliver():
		nonlocal inflight
		while True:
			at, data = await queue.get()
			if data is None:
				break
			wait = at - loop.time()
			if wait > 0:
				await asyncio.sleep(wait)
			writer.write(data)
			await writer.drain()
			inflight -= len(data)
			if inflight <= window // 2:
				drained.set()
		if writer.can_write_eof():
			writer.write_eof()

	task = asyncio.create_task(deliver())
	try:
		while True:
			data = await reader.read(CHUNK)
			now = loop.time()
			if not data:
				queue.put_nowait((max(now, link_free) + delay, None))
				break
			count(len(data))
			start = max(now, link_free)
			link_free = start + len(data) / rate
			inflight += len(data)
			queue.put_nowait((link_free + delay, data))
			if inflight >= window:
				drained.clear()
				await drained.wait()
		await task
	except (ConnectionError, asyncio.CancelledError):
		task.cancel()
		raise


async def handle(creader, cwriter, args, totals):
	loop = asyncio.get_running_loop()
	accepted = loop.time()
	totals.conns += 1
	delay = args.delay_ms / 1000.0
	rate = args.rate_mbit * 1e6 / 8
	# The SYN reaches the server D after the client sent it: connect upstream then.
	await asyncio.sleep(delay)
	try:
		sreader, swriter = await asyncio.open_connection(*args.target)
	except OSError:
		cwriter.close()
		return

	def up(n):
		totals.up += n

	def down(n):
		totals.down += n

	# The client may send once the SYN-ACK is back (2 D after connect).
	c2s = pump(creader, swriter, accepted + 2 * delay, delay, rate, args.window, up)
	s2c = pump(sreader, cwriter, loop.time(), delay, rate, args.window, down)
	try:
		await asyncio.gather(c2s, s2c)
	except (ConnectionError, OSError):
		pass
	finally:
		for w in (swriter, cwriter):
			try:
				w.close()
			except OSError:
				pass


async def main():
	ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
	ap.add_argument("--listen", type=loopback, default="127.0.0.1:0")
	ap.add_argument("--target", type=loopback, required=True)
	ap.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
	ap.add_argument("--rate-mbit", type=float, required=True, help="per connection, per direction")
	ap.add_argument("--window", type=int, default=4 << 20, help="bytes in flight per direction")
	ap.add_argument("--port-file")
	ap.add_argument("--log")
	args = ap.parse_args()
	if args.delay_ms < 0 or args.rate_mbit <= 0 or args.window < CHUNK:
		ap.error("--delay-ms >= 0, --rate-mbit > 0, --window >= 64 KiB")

	totals = Totals()
	server = await asyncio.start_server(lambda r, w: handle(r, w, args, totals), *args.listen,
					    reuse_address=True)
	host, port = server.sockets[0].getsockname()[:2]
	if args.port_file:
		with open(args.port_file, "w") as f:
			f.write(f"{port}\n")
	print(f"listening {host} {port}", flush=True)
	stop = asyncio.Event()
	for sig in (signal.SIGTERM, signal.SIGINT):
		asyncio.get_running_loop().add_signal_handler(sig, stop.set)
	t0 = time.monotonic()
	async with server:
		await stop.wait()
	if args.log:
		with open(args.log, "a") as f:
			f.write(f"connections={totals.conns} up_bytes={totals.up} down_bytes={totals.down} "
				f"seconds={time.monotonic() - t0:.1f}\n")


if __name__ == "__main__":
	try:
		asyncio.run(main())
	except KeyboardInterrupt:
		sys.exit(0)
