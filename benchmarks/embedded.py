"""The embedded default as a person runs it: ``media-pipeline process photo.jpg`` as whole
processes, with no PREFECT_API_URL, on a fresh data directory.

    .venv/bin/python benchmarks/embedded.py [--later 3]

Side by side in one run: today's local Prefect server (the first command starts it, runs
in-process and leaves the local service running; later ones go through the service, timed
once it answers) and Prefect's temporary server in each command (the behaviour before,
``MEDIA_PIPELINE_LOCAL_SERVER=false``), both on a 12 MP photo. The temporary server keeps
its database in a Prefect home of its own here: its first command (which migrates it) is
shown, and the reference is its later commands, the most favourable to it. The baseline
``python -c "import prefect"``; then the local server again on a machine loaded with two
busy processes per core, and two roots (media root and database) alternating in one data
dir, each served by the local service of its own settings. Prints seconds, the ratios the
issue sets targets for (first photo <= 0.6x the temporary server's, later photos <= 0.25x
of it and <= 2x the import, each alternating command <= the first photo), and how many
commands succeeded under load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


def timed(args: list[str], env: dict[str, str]) -> tuple[float, bool]:
    began = time.monotonic()
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    return time.monotonic() - began, done.returncode == 0


def environment(data: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_API_", "DATABASE_URL", "MEDIA_PIPELINE_"))
    }
    return {**env, "MEDIA_PIPELINE_DATA_DIR": str(data), **extra}


@contextmanager
def busy_machine() -> Iterator[None]:
    """Two busy processes per core."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"])
        for _ in range(2 * (os.cpu_count() or 1))
    ]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def photos(env: dict[str, str], photo: Path, count: int) -> list[tuple[float, bool]]:
    process = [str(BIN / "media-pipeline"), "process", str(photo)]
    return [timed(process, env) for _ in range(count)]


def first_then_later(
    env: dict[str, str], photo: Path, later: int
) -> tuple[list[tuple[float, bool]], float]:
    """The first photo, then (once the local service it leaves answers) the later ones;
    also how long the service took to answer after the first command ended."""
    import json

    import httpx

    first = photos(env, photo, 1)
    began = time.monotonic()
    services = Path(env["MEDIA_PIPELINE_DATA_DIR"]) / "local-service"
    while time.monotonic() - began < 300:
        try:
            (state,) = services.glob("*/api.json")
            url = json.loads(state.read_text())["url"]
            if httpx.get(f"{url}/health", timeout=2).json().get("worker") == "ready":
                break
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            pass
        time.sleep(0.5)
    ready = time.monotonic() - began
    return first + photos(env, photo, later), ready


def alternating(data: Path, photo: Path, rounds: int) -> list[tuple[float, bool]]:
    """Two roots (media root and database) in one data dir, one command each in turn: each
    is served by the local service of its own settings once that one answers."""
    envs = [
        environment(
            data,
            MEDIA_ROOT=str(data / root / "media"),
            DATABASE_URL=f"sqlite:///{data / root / 'app.db'}",
        )
        for root in ("a", "b")
    ]
    return [
        timed([str(BIN / "media-pipeline"), "process", str(photo)], env)
        for _ in range(rounds)
        for env in envs
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--later", type=int, default=5, help="later photos per setting")
    args = parser.parse_args()
    from tests.support.media import make_jpeg

    work = Path(tempfile.mkdtemp(prefix="embedded-"))
    photo = make_jpeg(work / "photo-12mp.jpg", 4000, 3000, orientation=6)
    imports = [
        timed([sys.executable, "-c", "import prefect"], dict(os.environ))[0] for _ in range(3)
    ]
    baseline = statistics.median(imports)
    temporary_env = environment(
        work / "temporary",
        MEDIA_PIPELINE_LOCAL_SERVER="false",
        PREFECT_HOME=str(work / "temporary" / "prefect-home"),
    )
    temporary_first, *temporary = photos(temporary_env, photo, 3)
    local_env = environment(work / "local")
    local, ready = first_then_later(local_env, photo, args.later)
    two_roots = alternating(work / "two-roots", photo, args.later)
    loaded_env = environment(work / "loaded")
    with busy_machine():
        loaded, loaded_ready = first_then_later(loaded_env, photo, args.later)
        loaded_temporary = photos(temporary_env, photo, 2)
    for env in (local_env, loaded_env, environment(work / "two-roots")):
        subprocess.run(
            [str(BIN / "media-pipeline"), "server", "stop"],
            env=env,
            capture_output=True,
            check=False,
        )

    reference = statistics.median(t for t, _ in temporary)
    first, later = local[0][0], statistics.median(t for t, _ in local[1:])
    print(f"python -c 'import prefect': {baseline:.2f} s (median of 3)")
    print(
        f"temporary server in each command: first {temporary_first[0]:.1f} s (migrates its "
        f"database), then {', '.join(f'{t:.1f}' for t, _ in temporary)} s (the reference)"
    )
    print(
        f"local server, first photo (starts it, in-process): {first:.1f} s; the local "
        f"service answered {ready:.0f} s later; later photos (through it): "
        f"{', '.join(f'{t:.1f}' for t, _ in local[1:])} s"
    )
    print(
        f"first / temporary: {first / reference:.2f} (target <= 0.60); against the temporary "
        f"server's own first command: {first / temporary_first[0]:.2f}"
    )
    print(f"later / temporary: {later / reference:.2f} (target <= 0.25)")
    print(f"later / import prefect: {later / baseline:.2f} (target <= 2.0)")
    slowest = max(t for t, _ in two_roots[2:])  # each root's first command is a first photo
    print(
        f"two roots alternating: {', '.join(f'{t:.1f}' for t, _ in two_roots)} s; slowest "
        f"after each root's first / first photo: {slowest / first:.2f} (target <= 1.0); "
        f"{sum(s for _, s in two_roots)}/{len(two_roots)} succeeded"
    )
    ok = sum(success for _, success in loaded)
    print(
        f"loaded machine (2 busy processes per core), local server: {ok}/{len(loaded)} "
        f"succeeded; first {loaded[0][0]:.1f} s, service after {loaded_ready:.0f} s, later "
        f"{statistics.median(t for t, _ in loaded[1:]):.1f} s"
    )
    ok_temporary = sum(success for _, success in loaded_temporary)
    print(
        f"loaded machine, temporary server: {ok_temporary}/{len(loaded_temporary)} succeeded "
        f"({', '.join(f'{t:.1f}' for t, _ in loaded_temporary)} s)"
    )
    print(f"all local-server commands succeeded: {all(s for _, s in local + loaded + two_roots)}")


if __name__ == "__main__":
    main()
