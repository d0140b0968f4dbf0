"""`make bench`: run the benchmark scripts and print their JSON lines.

The codec benchmark trains three stages (about 13 minutes on 2 cores); pass --codec to include it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    scripts = [[str(HERE / "matmul_peak.py")], [str(HERE / "judge.py")]]
    if "--codec" in sys.argv:
        scripts.append([str(HERE / "codec.py"), "--run", "runs/bench-codec"])
    for script in scripts:
        result = subprocess.run([sys.executable, *script], capture_output=True, text=True)
        if result.returncode:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        print(result.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
