#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""tests/clients/wheels.py with a smaller package set, for the remote end-to-end tests.

Same commands (build, serve, verify) and the same wheel shapes: alpha -> beta -> gamma, gamma
with a 3 MiB incompressible member (several chunks), and two point releases of delta whose
2 MiB of large members are identical and stored uncompressed, so they share chunks.  About
7 MB of wheels: large enough to measure transfers, small enough to run three times per remote
type in a few minutes.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients"))
import wheels  # noqa: E402

MIB = wheels.MIB
blob = wheels.blob


def packages():
    shared = {
        "delta/tables/part%d.bin" % i: blob("e2e-delta-shared-%d" % i, MIB // 2 + 4096 * i)
        for i in range(4)
    }
    out = [
        ("alpha", "1.0.0", ["beta>=1.0"], {
            "alpha/__init__.py": b'"""alpha"""\nimport beta\n__version__ = "1.0.0"\n',
            "alpha/core.py": b"def hello():\n    return 'alpha says hello'\n" * 20,
        }),
        ("beta", "1.2.0", ["gamma==3.0"], {
            "beta/__init__.py": b'"""beta"""\nimport gamma\n__version__ = "1.2.0"\n',
            "beta/util.py": blob("e2e-beta-util", 30000).hex().encode(),
        }),
        ("gamma", "3.0", [], {
            "gamma/__init__.py": b'"""gamma"""\n__version__ = "3.0"\n',
            "gamma/data/blob.bin": blob("e2e-gamma-blob", 3 * MIB),
        }),
        ("epsilon", "0.9", [], {
            "epsilon/__init__.py": b'"""epsilon"""\n__version__ = "0.9"\n',
            "epsilon/table.bin": blob("e2e-epsilon", 700000),
        }),
    ]
    for ver in ("2.0.0", "2.0.1"):
        members = {
            "delta/__init__.py": ('"""delta"""\n__version__ = "%s"\n' % ver).encode(),
            "delta/changed.bin": blob("e2e-delta-changed-" + ver, 100000),
        }
        members.update(shared)
        out.append(("delta", ver, [], members))
    return out


wheels.packages = packages

if __name__ == "__main__":
    wheels.main()
