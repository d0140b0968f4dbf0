"""`make bench`: run the benchmark scripts and print their JSON lines.

The codec benchmark trains three stages (about 13 minutes on 2 cores); pass --codec to include it.
The serving load benchmark (about 2 minutes, a tiny run included) runs with --serve.
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
    if "--serve" in sys.argv:
        scripts.append([str(HERE / "serve_load.py"), "--run", "runs/serve-bench", "--requests", "200"])
    for script in scripts:
        result = subprocess.run([sys.executable, *script], capture_output=True, text=True)
        if result.returncode:
            print(result.stderr, file=sys.stderr)
            return result.returncode
        print("\n".join(line for line in result.stdout.splitlines() if line.startswith("{")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
