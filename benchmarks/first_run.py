"""Start-up cost of a flow command, as a user meets it: `cricket score` against an empty
MLflow store (so the run stops at loading the model and the time is the start-up), with
an empty HOME and Prefect home, Prefect's default settings and no PREFECT_API_URL.

    python benchmarks/first_run.py [--cricket PATH] [--with-server]

Prints one line per case and a JSON object last: cold (first command on the machine),
warm (the next one), and with --with-server against a `prefect server start` running
on a free port (the command finds it)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cricket: str, env: dict[str, str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    r = subprocess.run([cricket, "score"], env=env, capture_output=True, text=True, check=False,
                       timeout=900)
    return time.perf_counter() - t0, r.returncode, (r.stderr.strip().splitlines() or [""])[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cricket", default=shutil.which("cricket") or ".venv/bin/cricket")
    ap.add_argument("--with-server", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cricket-first-run-"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CRICKET_", "PREFECT_", "MLFLOW_"))}
    (tmp / "home").mkdir()
    env.update(HOME=str(tmp / "home"), PREFECT_HOME=str(tmp / "prefect"),
               CRICKET_STATE_DIR=str(tmp / "state"),
               PREFECT_SERVER_API_PORT=str(free_port()))
    out: dict[str, object] = {"cricket": args.cricket}
    for case in ("cold", "warm"):
        sec, rc, last = run(args.cricket, env)
        out[case] = round(sec, 1)
        print(f"{case:<12} {sec:6.1f} s  exit {rc}  {last[:110]}")
    if args.with_server:
        port = env["PREFECT_SERVER_API_PORT"]
        prefect = str(Path(args.cricket).with_name("prefect"))
        server = subprocess.Popen([prefect, "server", "start", "--port", port],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            import httpx

            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(1)
            sec, rc, last = run(args.cricket, env)
            out["server"] = round(sec, 1)
            print(f"{'server':<12} {sec:6.1f} s  exit {rc}  {last[:110]}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
