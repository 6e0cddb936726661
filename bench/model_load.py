"""Load time and memory of one loaded model, each in a fresh process (issue 22's closing figures).

    python -m bench.model_load PACKAGE_DIR NAME [--runtime onnxruntime|openvino] [--cache-dir D]

Prints the seconds `worker.models.load_package_classifier` took, the process's resident memory
before and after (VmRSS) and their difference (the first load pays for importing the runtime
too), then the same for a second copy of the model in the same process: what each further
model held costs a worker. Run it
once per package and runtime; the first run on a machine also checks and times the runtime
(machine.json), later ones do not (run it twice and read the second).
"""

from __future__ import annotations

import argparse
import time


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_load", description=__doc__)
    parser.add_argument("package")
    parser.add_argument("name")
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--cache-dir", default=".run/models")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from worker.models import load_package_classifier  # imported before the clock starts

    held = []  # kept alive: each copy's memory stays counted
    for copy in ("first", "second"):
        before = _rss_mib()
        started = time.perf_counter()
        held.append(
            load_package_classifier(
                args.name,
                args.package,
                args.threads,
                runtime=args.runtime,
                cache_dir=args.cache_dir,
            )
        )
        seconds = time.perf_counter() - started
        after = _rss_mib()
        print(
            f"{args.name} {held[-1].version} on {held[-1].runtime}, {copy} copy: loaded in"
            f" {seconds:.2f} s, RSS {before:.0f} -> {after:.0f} MiB (+{after - before:.0f} MiB)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
