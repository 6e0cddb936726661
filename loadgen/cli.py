"""`python -m loadgen`: send images to a classifier, show progress, summarise, and report.

python -m loadgen --num_request 100 --url http://127.0.0.1:3000/upload --image_folder images
python -m loadgen --duration 60 --concurrency 32 --url ... --image_folder images --out run1
python -m loadgen --rate 20 --duration 120 --expected images/labels.json --json ...
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from loadgen import report, schedule
from loadgen.client import Client, Target, TargetError, check_reachable
from loadgen.inputs import Expected, InputError, load_expected, load_images
from loadgen.recorder import Recorder
from loadgen.status import StatusPoller, read_status, run_cost
from loadgen.summary import Outcome, format_table, summarize
from loadgen.uploads import Uploads
from runtime.cli import OneLineParser, non_negative, positive

PROG = "loadgen"
DEFAULT_URL = "http://127.0.0.1:3000/upload"
MAX_THREADS = 256  # the default cap; the web tier's default WEB_THREADS is the same
DURATION_THREADS = 16
CHECK_TIMEOUT_S = 5.0
EXIT_INPUT, EXIT_INTERRUPTED = 1, 130
WATCH_AFTER_S = 120.0  # the default quiet period (30 s) and a stop, with room to spare


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Send images to an image-classification server and measure what users see.",
        epilog="Without --num_request or --duration, each image is sent once. "
        "`python -m loadgen classify DIR` submits a whole folder as one batch job instead.",
    )
    bound = p.add_mutually_exclusive_group()
    bound.add_argument(
        "--num_request",
        "--num-request",
        "-n",
        type=positive(int),
        metavar="N",
        help="send N requests, cycling through the images",
    )
    bound.add_argument(
        "--duration",
        type=positive(float),
        metavar="SECONDS",
        help="start requests until SECONDS have passed, then wait for those in flight",
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"upload URL (default {DEFAULT_URL})")
    p.add_argument(
        "--image_folder",
        "--image-folder",
        required=True,
        metavar="DIR",
        help="folder of images (jpg, png, ...), read once into memory",
    )
    p.add_argument(
        "--concurrency",
        "-c",
        type=positive(int),
        metavar="N",
        help="closed loop: parallel clients (default: one per request like the course's client, "
        f"at most {MAX_THREADS}; {DURATION_THREADS} with --duration); "
        f"with --rate: most requests in flight (default {MAX_THREADS})",
    )
    p.add_argument(
        "--rate",
        type=positive(float),
        metavar="PER_S",
        help="open loop: Poisson arrivals at PER_S requests per second",
    )
    p.add_argument("--field", default="myfile", help="multipart field name (default myfile)")
    p.add_argument(
        "--expected",
        metavar="FILE",
        help="expected labels to score accuracy: CSV filename,label (header optional) "
        'or JSON {"file": ["label", ...]}',
    )
    p.add_argument(
        "--unique",
        action="store_true",
        help="make every upload's bytes distinct (a JPEG comment or PNG text chunk; the pixels "
        "are unchanged), so a result cache cannot answer and every request reaches the model",
    )
    p.add_argument("--out", metavar="DIR", help="write results.csv and report.png here")
    p.add_argument(
        "--watch_after",
        "--watch-after",
        type=non_negative(),
        default=WATCH_AFTER_S,
        metavar="SECONDS",
        help="after the last answer, keep sampling /status until no worker runs, for at most "
        f"SECONDS (default {WATCH_AFTER_S:g}; 0: stop at once), so the report shows scale-in",
    )
    p.add_argument(
        "--timeout",
        type=positive(float),
        default=90.0,
        metavar="SECONDS",
        help="socket timeout per request (default 90)",
    )
    p.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="asynchronous mode: each request is submitted (202) then its result polled; "
        "the latency is submit to result",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    p.add_argument(
        "--print_replies",
        "--print-replies",
        action="store_true",
        help="print each reply, as the course's client does",
    )
    return p


@dataclass(frozen=True)
class Job:
    target: Target
    plan: schedule.Plan
    uploads: Uploads
    expected: Expected | None
    out: Path | None


def prepare(args: argparse.Namespace) -> Job:
    """Every check that can fail before the first request, each with a one-line message."""
    target = Target.parse(args.url)
    if not args.field or any(c in args.field for c in '"\r\n'):
        raise InputError(f"--field must be a plain name, got {args.field!r}")
    images = load_images(args.image_folder)
    expected = load_expected(args.expected) if args.expected else None
    out = Path(args.out) if args.out else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create --out folder {out}: {exc.strerror or exc}") from None
    check_reachable(target, min(args.timeout, CHECK_TIMEOUT_S))
    num = args.num_request
    if num is None and args.duration is None:
        num = len(images)
    if args.concurrency is not None:
        concurrency = args.concurrency
    elif args.rate is None and num is not None:
        concurrency = min(num, MAX_THREADS)
    else:
        concurrency = MAX_THREADS if args.rate is not None else DURATION_THREADS
    uploads = Uploads(args.field, images, args.unique)
    plan = schedule.Plan(num, args.duration, args.rate, concurrency)
    return Job(target, plan, uploads, expected, out)


def _run(job: Job, args: argparse.Namespace):
    """Runs the plan; Ctrl-C stops new requests and waits for those in flight."""
    status_doc = read_status(Client(job.target, min(args.timeout, CHECK_TIMEOUT_S)))
    stop = threading.Event()
    t0, wall0 = time.monotonic(), time.time()
    poller = StatusPoller(job.target, t0).start() if status_doc is not None else None
    client = Client(job.target, args.timeout, asynchronous=args.asynchronous)
    interrupted = False
    with tqdm(
        total=job.plan.num_request,
        unit="req",
        desc=PROG,
        file=sys.stderr,
        disable=None,
        dynamic_ncols=True,
    ) as bar:
        recorder = Recorder(job.uploads, job.expected, client, t0, wall0, bar, args.print_replies)
        runner = threading.Thread(
            target=schedule.run, args=(job.plan, recorder.issue, stop, t0), daemon=True
        )
        runner.start()
        while runner.is_alive():
            try:
                runner.join()
            except KeyboardInterrupt:
                if interrupted:
                    raise
                interrupted = True
                stop.set()
                tqdm.write(f"{PROG}: stopping; waiting for requests in flight", file=sys.stderr)
    elapsed = time.monotonic() - t0
    if poller is not None and not interrupted and args.watch_after > 0:
        _watch_scale_in(poller, args.watch_after)
    samples = poller.stop() if poller is not None else None
    cost = None
    if status_doc is not None:
        cost = run_cost(status_doc, read_status(Client(job.target, CHECK_TIMEOUT_S)))
    return recorder.outcomes, elapsed, samples, interrupted, cost


def _watch_scale_in(poller: StatusPoller, limit_s: float) -> None:
    """Keep sampling until no worker runs or starts, so the report shows the fleet shrink."""
    print(
        f"{PROG}: watching /status until no worker runs (at most {limit_s:g} s; Ctrl-C skips)",
        file=sys.stderr,
    )
    deadline = time.monotonic() + limit_s
    try:
        while time.monotonic() < deadline:
            if poller.fleet_idle():
                print(f"{PROG}: the fleet is back to 0 running", file=sys.stderr)
                return
            time.sleep(0.5)
        print(f"{PROG}: still running after {limit_s:g} s; stopped watching", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG}: stopped watching", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["classify"]:
        from loadgen.classify import main as classify

        return classify(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        job = prepare(args)
    except (InputError, TargetError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    bound = (
        f"{job.plan.num_request} requests"
        if job.plan.num_request is not None
        else f"{job.plan.duration_s:g} s"
    )
    mode = f"rate {args.rate:g}/s" if args.rate else f"concurrency {job.plan.concurrency}"
    unique = ", unique bytes" if args.unique else ""
    plan_text = f"{bound} to {job.target.url} ({len(job.uploads)} images, {mode}{unique})"
    print(f"{PROG}: {plan_text}", file=sys.stderr)
    try:
        outcomes, elapsed, samples, interrupted, cost = _run(job, args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    peak = None
    if samples is not None:
        running = [s.running for s in samples if s.running is not None]
        peak = max(running) if running else None
    summary = summarize(
        outcomes, elapsed, scored=job.expected is not None, peak_running=peak, cost=cost
    )
    if args.json:
        print(format_table(summary), file=sys.stderr)
        print(summary.to_json(), flush=True)
    else:
        print(format_table(summary), flush=True)
    if job.out is not None:
        try:
            _write_out(job.out, outcomes, samples or [], report.report_title(summary, plan_text))
        except OSError as exc:
            print(
                f"{PROG}: error: cannot write to {job.out}: {exc.strerror or exc}", file=sys.stderr
            )
            return EXIT_INPUT
    return EXIT_INTERRUPTED if interrupted else 0


def _write_out(out: Path, outcomes: list[Outcome], samples: list, title: str) -> None:
    written = [out / "results.csv", out / "report.png"]
    report.write_results_csv(written[0], outcomes)
    report.write_report_png(written[1], outcomes, samples, title)
    if samples:
        written.append(out / "fleet.csv")
        report.write_fleet_csv(written[2], samples)
    print(f"{PROG}: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
