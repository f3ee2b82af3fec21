"""Does the pipeline work on the newest Prefect 3.x? One command, before an upgrade.

    .venv/bin/python benchmarks/prefect_canary.py [--version 3.10.0] [--keep]

Prefect is pinned exactly because the warm worker uses its private runner and engine entry
(``deployments/prefect_private.py``). This makes a scratch virtual environment, installs
the locked dependencies with Prefect (and prefect-redis) lifted to the newest 3.x (or
``--version``), then the project, and runs the tests of everything that touches Prefect's
private surface: the engine-entry check, the warm worker, the production end-to-end tests
and the drills. It prints the versions, then each failing test with its last error line,
or that all passed. The scratch environment is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIFTED = ("prefect", "prefect-redis")
TESTS = [
    "tests/test_prefect_private.py",
    "tests/test_warm_worker.py",
    "tests/test_production.py",
    "tests/test_drills.py",
]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", help="a Prefect version; default: the newest 3.x")
    parser.add_argument("--keep", action="store_true", help="keep the scratch environment")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="prefect-canary-"))
    venv = scratch / "venv"
    python = venv / "bin" / "python"
    try:
        run(sys.executable, "-m", "venv", str(venv))
        locked = [
            line
            for line in (ROOT / "requirements.lock").read_text().splitlines()
            if line and not line.startswith((" ", "#")) and line.split("==")[0] not in LIFTED
        ]
        (scratch / "requirements.txt").write_text("\n".join(locked) + "\n")
        wanted = f"prefect=={args.version}" if args.version else "prefect>=3,<4"
        steps = [
            ("locked dependencies", ["-r", str(scratch / "requirements.txt")]),
            (wanted, ["--upgrade", wanted, "prefect-redis"]),
            ("the project", ["--no-deps", "-e", str(ROOT)]),
        ]
        for what, pip_args in steps:
            done = run(str(python), "-m", "pip", "install", "--quiet", *pip_args)
            if done.returncode != 0:
                print(f"could not install {what}:\n{done.stderr[-3000:]}")
                sys.exit(2)
        version = run(str(python), "-c", "import prefect; print(prefect.__version__)")
        print(f"Prefect {version.stdout.strip()} (pinned: 3.9.1)", flush=True)
        tests = run(str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *TESTS)
        failures = re.findall(r"^FAILED (\S+)(?: - (.*))?$", tests.stdout, re.MULTILINE)
        summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else ""
        for name, reason in failures:
            print(f"broke: {name}: {reason or 'see the test output'}")
        print(summary or tests.stderr[-2000:])
        sys.exit(0 if tests.returncode == 0 else 1)
    finally:
        if args.keep:
            print(f"scratch environment: {venv}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
