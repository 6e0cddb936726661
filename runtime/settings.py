"""One frozen settings object per process, read once from the environment.

Every setting of every tier lives in this one table so that docs/settings.md, `--help` and the
deployment code agree. Units are part of the names. A bad value fails at start with one line.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from runtime import keys
from runtime.messages import is_model_name
from runtime.prices import PriceError, Prices, parse_prices
from runtime.resources import MAX_RETENTION_DAYS


class ConfigError(ValueError):
    """A setting from the environment is missing or malformed."""


# The exit code of every entry point that stops on a bad setting.
EXIT_CONFIG = 2


TIERS = ("web", "worker", "scaler")
# The choices of each setting that takes one of a few words; Settings.validate checks them and
# the tiers that act on them import them from here (scaler.registry builds one per POLICY).
POLICIES = ("drain", "target", "seed")
# The queues named after REQUEST_QUEUE: here and in the deployed stack's template.
DEAD_LETTER_SUFFIX = "-dlq"
JOB_LANE_SUFFIX = "-jobs"
DEFAULT_POLICY = "drain"  # projects drain times: docs/scaling.md
RUNNERS = ("none", "process", "docker")
# How the fleet buys its instances (docs/scaling.md, "Spot"). On-demand by default: locally nothing
# is charged and the warm pool's restarts are faster than launches; a one-time Spot instance cannot
# be stopped into the pool. The deployed stack's template asks for spot-with-fallback.
MARKETS = ("on-demand", "spot", "spot-with-fallback")
DEFAULT_MARKET = "on-demand"
_INSTANCE_TYPE = re.compile(r"^[a-z0-9-]+\.[a-z0-9]+$")
MODEL_OPTIMIZATIONS = ("jit", "eager")
# auto: the fastest runtime installed whose export answers as PyTorch fp32 does (worker.models).
MODEL_RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
PREPROCESSES = ("default", "reference")
LOG_FORMATS = ("text", "json")
# An upload carried inline costs base64's 4/3 in its request message. SQS bills a message per
# 64 KiB; up to 45 KiB of image (60 KiB of base64, beside at most ~1 KiB of other fields) the
# message stays one billed unit, so the GET it saves is free. The limit keeps the message well
# under SQS's 256 KiB.
INLINE_ONE_UNIT_BYTES = 45 * 1024
INLINE_LIMIT_BYTES = 150 * 1024
# botocore refreshes a refreshable credential this long before it expires (its advisory window):
# a handed-over session (runtime.web_credentials) must always have more than this left.
SDK_REFRESH_WINDOW_S = 15 * 60


def _setting(default, help: str, tiers: str | tuple[str, ...] = "all", choices: tuple = ()):
    """tiers: the processes that read the setting ("all": every one of TIERS)."""
    tiers = TIERS if tiers == "all" else (tiers,) if isinstance(tiers, str) else tiers
    return field(default=default, metadata={"help": help, "tiers": tiers, "choices": choices})


def tier_fields(tier: str) -> list[dataclasses.Field]:
    """The settings a process of `tier` reads: what its --help lists and its environment needs."""
    return [f for f in dataclasses.fields(Settings) if tier in f.metadata["tiers"]]


@dataclass(frozen=True)
class Settings:
    # AWS resources: the same names in every deployment, overridable for real accounts.
    aws_region: str = _setting("us-east-1", "AWS region (AWS_DEFAULT_REGION is read too)")
    input_bucket: str = _setting("classifier-input", "S3 bucket for uploaded images")
    output_bucket: str = _setting("classifier-output", "S3 bucket for results (JSON by id)")
    request_queue: str = _setting("classifier-requests", "SQS queue of classification requests")
    result_expiry_days: int = _setting(
        7,
        "days before stored results, uploads, jobs and queued requests expire (S3 lifecycle, "
        "SQS retention); an async upload's deadline",
    )
    reply_queue_prefix: str = _setting("classifier-reply-", "name prefix of per-web reply queues")
    max_receive_count: int = _setting(3, "deliveries before a request goes to the DLQ")
    log_format: str = _setting(
        "text", "log lines: 'text', or 'json' (one object a line)", choices=LOG_FORMATS
    )

    # Web tier.
    host: str = _setting("127.0.0.1", "address the web tier binds", "web")
    port: int = _setting(3000, "port the web tier binds", "web")
    web_threads: int = _setting(
        256, "Waitress worker threads: each waiting upload holds one, so >= peak uploads", "web"
    )
    web_connection_limit: int = _setting(
        1024, "open client connections; at the limit the longest-idle close first", "web"
    )
    web_connections_per_client: int = _setting(
        256,
        "open connections of one client address past which its longest-idle close first",
        "web",
    )
    web_idle_timeout_s: int = _setting(
        20, "a connection that sends nothing this long (a stalled body) is closed", "web"
    )
    result_timeout_s: float = _setting(60.0, "seconds an upload waits before 504", "web")
    max_upload_bytes: int = _setting(10 * 1024 * 1024, "largest accepted upload", "web")
    max_pixels: int = _setting(40_000_000, "largest accepted width x height", "web")
    inline_max_bytes: int = _setting(
        INLINE_ONE_UNIT_BYTES,
        "uploads up to this size also ride in their request message, sparing the worker a GET"
        " (0 = never; every upload is still stored; docs/performance.md)",
        "web",
    )
    web_upload_memory_mb: int = _setting(
        512, "upload bodies the web process holds at once; more wait (503 after the timeout)", "web"
    )
    result_cache: bool = _setting(
        True, "answer repeated image bytes from the stored result of the same model", "web"
    )
    api_key: str = _setting("", "if set, uploads and results need this key (X-Api-Key)", "web")
    max_backlog: int = _setting(2000, "queued requests past which uploads get 503 (0 = off)", "web")
    job_max_images: int = _setting(10_000, "most images in one batch job", "web")
    job_max_backlog: int = _setting(
        50_000, "queued job images past which POST /jobs gets 503 (0 = off)", "web"
    )
    job_rate_per_min: int = _setting(
        10, "POST /jobs per minute per API key, or per client address without one (0 = off)", "web"
    )
    job_prefixes: str = _setting(
        "",
        "input-bucket prefixes a batch job may name, comma-separated, as whole folders"
        " (empty: prefix jobs off; never a service area such as uploads/ or jobs/)",
        ("web", "worker"),
    )
    job_max_bytes: int = _setting(
        2 * 1024**3, "largest batch-job archive (spooled to disk, never held in memory)", "web"
    )
    job_spool_max_bytes: int = _setting(
        8 * 1024**3,
        "disk the batch-job bodies in hand may take at once (a job past it: 503, try again)",
        "web",
    )
    job_max_inflated_bytes: int = _setting(
        4 * 1024**3,
        "most bytes one batch-job archive may inflate to (members, headers and skipped data)",
        "web",
    )
    job_max_ratio: float = _setting(
        50.0,
        "most bytes an archive may inflate to per byte sent, past one image's worth (bombs)",
        "web",
    )
    reply_queue_max_age_s: float = _setting(
        300.0, "a reply queue without a heartbeat this long is an orphan and deleted", "web"
    )
    scaler_status_url: str = _setting(
        "http://127.0.0.1:3001/status", "where /status reads the fleet and decisions", "web"
    )

    # Worker tier.
    # The web tier keys its result cache by model, its version and preprocess; the scaler
    # remembers the workers' throughput by it.
    model: str = _setting(
        "efficientnet_lite0",
        "the default classifier: a built-in name (or a torchvision model)",
        ("web", "worker", "scaler"),
    )
    models: str = _setting(
        "",
        "model packages served beside MODEL, as NAME=PATH (a directory, or s3://BUCKET/PREFIX/;"
        " s3://BUCKET/models/NAME/ follows the version models/NAME/CURRENT names),"
        " comma-separated; an upload names one with `model` (docs/models.md)",
        ("web", "worker"),
    )
    model_pointer_check_s: float = _setting(
        10.0,
        "seconds between a worker's reads of the version pointer (models/NAME/CURRENT) of each"
        " versionless S3 entry of MODELS: one conditional GET a read, $0.0035 a worker-day at 10",
        "worker",
    )
    model_optimize: str = _setting(
        "jit",
        "'jit' (trace + freeze, faster on CPU) or 'eager'",
        "worker",
        choices=MODEL_OPTIMIZATIONS,
    )
    model_runtime: str = _setting(
        "auto",
        "what runs the model: 'auto' (the fastest exact one installed), 'torch', 'onnxruntime'"
        " or 'openvino' (docs/models.md)",
        "worker",
        choices=MODEL_RUNTIMES,
    )
    model_cache_dir: str = _setting(
        ".run/models",
        "where the model is exported to ONNX once, verified, and reused by later starts",
        "worker",
    )
    preprocess: str = _setting(
        "default",
        "'default' (the model's own) or 'reference'",
        ("web", "worker"),
        choices=PREPROCESSES,
    )
    batch_max: int = _setting(10, "most messages taken and classified together (1-10)", "worker")
    # The scaler's local runners give a stopping worker this long to finish its batch.
    job_batch_max: int = _setting(
        4, "most job images taken at once (smaller: uploads wait less behind a job)", "worker"
    )
    visibility_timeout_s: int = _setting(
        30, "SQS visibility timeout for requests", ("worker", "scaler")
    )
    worker_decode_budget_mb: int = _setting(
        1024, "estimated peak memory of the decodes a worker runs at once", "worker"
    )
    worker_models_memory_mb: int = _setting(
        1024,
        "estimated memory of the model packages a worker holds at once (MODELS, and a new"
        " version beside the old during a rollout); over it a worker refuses to start, or the"
        " version, with one line",
        "worker",
    )
    receive_wait_s: int = _setting(10, "SQS long-poll wait (0-20)", "worker")
    fetch_concurrency: int = _setting(10, "parallel S3 downloads per batch", "worker")
    torch_threads: int = _setting(0, "intra-op threads for the model (0 = all cores)", "worker")
    worker_metrics_port: int = _setting(
        0, "port of the worker's Prometheus /metrics (0 = off)", "worker"
    )
    instance_metadata_url: str = _setting(
        "",
        "EC2 instance metadata (IMDSv2) the worker watches for a Spot interruption notice or a"
        " rebalance recommendation (empty: not watched; the hosts' user-data sets it)",
        "worker",
    )
    notice_poll_s: float = _setting(
        2.0, "seconds between the worker's looks for a notice (AWS gives two minutes)", "worker"
    )

    # Scaler.
    policy: str = _setting(
        DEFAULT_POLICY,
        f"scaling policy: {', '.join(POLICIES)} (docs/scaling.md)",
        "scaler",
        choices=POLICIES,
    )
    # Workers label their throughput metric with it, the web tier its accepted uploads; the
    # scaler reads both by it.
    fleet_name: str = _setting(
        "classifier-workers",
        "fleet tag value that marks our instances",
        ("web", "worker", "scaler"),
    )
    fleet_min: int = _setting(0, "fewest running workers", "scaler")
    fleet_max: int = _setting(12, "most running workers (embedded: the core count)", "scaler")
    job_fleet_max: int = _setting(
        0, "most workers started for batch-job images alone (0 = FLEET_MAX)", "scaler"
    )
    scaler_tick_s: float = _setting(2.0, "seconds between scaler decisions", "scaler")
    quiet_period_s: float = _setting(30.0, "idle seconds before scaling in", "scaler")
    latency_target_s: float = _setting(5.0, "queueing latency the target policy aims for", "scaler")
    idle_delay_s: float = _setting(
        2.0, "drain policy: idle seconds (nothing queued) before the fleet goes to zero", "scaler"
    )
    expected_boot_new_s: float = _setting(
        40.0,
        "drain policy: seconds a new instance takes until its worker works, until measured",
        "scaler",
    )
    expected_boot_start_s: float = _setting(
        10.0,
        "drain policy: seconds a stopped instance takes to work again, until measured",
        "scaler",
    )
    arrival_window_s: float = _setting(
        1.0, "arrival rate: the lesser of the last two windows this long (bursts read 0)", "scaler"
    )
    default_throughput_img_s: float = _setting(
        10.0,
        "per-worker images/s assumed until workers first report theirs (then remembered)",
        "scaler",
    )
    warm_pool_max: int = _setting(2, "stopped instances kept for fast restarts", "scaler")
    stopped_max_age_s: float = _setting(
        3600.0, "stopped instances older than this are terminated", "scaler"
    )
    warm_pool_spares: bool = _setting(
        True,
        "fill the warm pool ahead of need once a worker has served a minute, so a surge restarts"
        " instead of launching; spares are on-demand (EC2 will not stop a Spot instance), none"
        " under FLEET_MARKET=spot",
        "scaler",
    )
    launch_template: str = _setting(
        "classifier-worker", "EC2 launch template for new workers", "scaler"
    )
    fleet_market: str = _setting(
        DEFAULT_MARKET,
        "how workers are bought: 'on-demand', 'spot', or 'spot-with-fallback' (Spot first,"
        " on-demand when Spot is refused; docs/scaling.md)",
        "scaler",
        choices=MARKETS,
    )
    fleet_instance_types: str = _setting(
        "",
        "instance types a launch may use, comma-separated, tried in order when one has no"
        " capacity (empty: the launch template's)",
        "scaler",
    )
    runner: str = _setting(
        "none", "local runner: 'none' (real EC2), 'process' or 'docker'", "scaler", choices=RUNNERS
    )
    worker_image: str = _setting(
        "elastic-classifier-worker:latest", "image the docker runner runs", "scaler"
    )
    boot_delay_new_s: float = _setting(0.0, "emulated boot delay of a new local instance", "scaler")
    boot_delay_start_s: float = _setting(
        0.0, "emulated boot delay of a restarted instance", "scaler"
    )
    scaler_status_host: str = _setting(
        "127.0.0.1", "address the scaler's /status binds (0.0.0.0 in a container)", "scaler"
    )
    scaler_status_port: int = _setting(3001, "port of the scaler's JSON /status", "scaler")
    scaler_wake_token_file: str = _setting(
        "",
        "file the scaler writes a fresh token to at start; a web process beside it reads it to"
        " wake the scaler at once when work reaches an idle fleet (empty: no wake, the next"
        " tick decides; runtime/wake.py)",
        ("web", "scaler"),
    )
    scaler_wake_token_owner: str = _setting(
        "",
        "UID:GID the scaler gives its wake token file to, where it runs as root and the web as"
        " another user (compose: the web image's 10001:10001); empty: the scaler's own user",
        "scaler",
    )
    web_role_arn: str = _setting(
        "",
        "role the scaler assumes and hands to the web container beside it, as short-lived"
        " credentials in WEB_CREDENTIALS_DIR (empty: none; runtime/web_credentials.py)",
        "scaler",
    )
    web_credentials_dir: str = _setting(
        "",
        "directory, shared with the web container, where the scaler writes WEB_ROLE_ARN's"
        " session and the AWS config that reads it",
        "scaler",
    )
    web_credentials_duration_s: int = _setting(
        3600, "lifetime of each web-role session (900-3600: STS's limit for a role chain)", "scaler"
    )
    web_credentials_refresh_s: int = _setting(
        900,
        "seconds between web-role sessions; the newest must outlive the SDK's 15-minute"
        " refresh window by more than this",
        "scaler",
    )
    prices_json: str = _setting(
        "",
        "overrides of the price table cost figures use, as JSON (empty: AWS's us-east-1 list"
        " prices; runtime/prices.py, docs/scaling.md)",
        ("web", "scaler"),
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.name.upper())
            if raw is None and f.name == "aws_region":
                raw = env.get("AWS_DEFAULT_REGION")
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name.upper(), raw, type(f.default))
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        checks = [
            (0 < self.port < 65536, "PORT must be 1-65535"),
            (self.web_threads >= 1, "WEB_THREADS must be >= 1"),
            (self.web_connection_limit >= self.web_threads, "WEB_CONNECTION_LIMIT < WEB_THREADS"),
            (self.web_connections_per_client >= 1, "WEB_CONNECTIONS_PER_CLIENT must be >= 1"),
            (self.web_upload_memory_mb >= 1, "WEB_UPLOAD_MEMORY_MB must be >= 1"),
            (self.web_idle_timeout_s >= 1, "WEB_IDLE_TIMEOUT_S must be >= 1"),
            (self.max_backlog >= 0, "MAX_BACKLOG must be >= 0"),
            (self.job_max_backlog >= 0, "JOB_MAX_BACKLOG must be >= 0"),
            (self.job_rate_per_min >= 0, "JOB_RATE_PER_MIN must be >= 0"),
            (self.reply_queue_max_age_s >= 3, "REPLY_QUEUE_MAX_AGE_S must be >= 3"),
            (self.result_timeout_s > 0, "RESULT_TIMEOUT_S must be > 0"),
            (self.max_upload_bytes > 0, "MAX_UPLOAD_BYTES must be > 0"),
            (
                0 <= self.inline_max_bytes <= INLINE_LIMIT_BYTES,
                f"INLINE_MAX_BYTES must be 0-{INLINE_LIMIT_BYTES} (a message's limit, as base64)",
            ),
            (self.max_pixels > 0, "MAX_PIXELS must be > 0"),
            (
                1 <= self.result_expiry_days <= MAX_RETENTION_DAYS,
                f"RESULT_EXPIRY_DAYS must be 1-{MAX_RETENTION_DAYS} (SQS keeps no message longer)",
            ),
            (self.job_max_images >= 1, "JOB_MAX_IMAGES must be >= 1"),
            (self.job_max_bytes > 0, "JOB_MAX_BYTES must be > 0"),
            (self.job_spool_max_bytes > 0, "JOB_SPOOL_MAX_BYTES must be > 0"),
            (self.job_max_inflated_bytes > 0, "JOB_MAX_INFLATED_BYTES must be > 0"),
            (self.job_max_ratio >= 1, "JOB_MAX_RATIO must be >= 1"),
            (self.job_fleet_max >= 0, "JOB_FLEET_MAX must be >= 0"),
            (1 <= self.batch_max <= 10, "BATCH_MAX must be 1-10 (an SQS receive's limit)"),
            (1 <= self.job_batch_max <= 10, "JOB_BATCH_MAX must be 1-10"),
            (0 <= self.receive_wait_s <= 20, "RECEIVE_WAIT_S must be 0-20"),
            (self.worker_decode_budget_mb >= 1, "WORKER_DECODE_BUDGET_MB must be >= 1"),
            (self.worker_models_memory_mb >= 1, "WORKER_MODELS_MEMORY_MB must be >= 1"),
            (self.visibility_timeout_s >= 1, "VISIBILITY_TIMEOUT_S must be >= 1"),
            (self.max_receive_count >= 1, "MAX_RECEIVE_COUNT must be >= 1"),
            (0 <= self.fleet_min <= self.fleet_max, "need 0 <= FLEET_MIN <= FLEET_MAX"),
            (self.scaler_tick_s > 0, "SCALER_TICK_S must be > 0"),
            (self.quiet_period_s >= 0, "QUIET_PERIOD_S must be >= 0"),
            (self.latency_target_s > 0, "LATENCY_TARGET_S must be > 0"),
            (self.idle_delay_s >= 0, "IDLE_DELAY_S must be >= 0"),
            (self.expected_boot_new_s >= 0, "EXPECTED_BOOT_NEW_S must be >= 0"),
            (self.expected_boot_start_s >= 0, "EXPECTED_BOOT_START_S must be >= 0"),
            (self.arrival_window_s > 0, "ARRIVAL_WINDOW_S must be > 0"),
            (self.default_throughput_img_s > 0, "DEFAULT_THROUGHPUT_IMG_S must be > 0"),
            (self.warm_pool_max >= 0, "WARM_POOL_MAX must be >= 0"),
            (0 <= self.worker_metrics_port < 65536, "WORKER_METRICS_PORT must be 0-65535"),
            (self.notice_poll_s > 0, "NOTICE_POLL_S must be > 0"),
            (self.model_pointer_check_s > 0, "MODEL_POINTER_CHECK_S must be > 0"),
            (
                self.instance_metadata_url.startswith(("http://", "https://"))
                or not self.instance_metadata_url,
                "INSTANCE_METADATA_URL must be empty or an http(s):// URL",
            ),
            (
                not self.scaler_wake_token_owner
                or re.fullmatch(r"\d+:\d+", self.scaler_wake_token_owner) is not None,
                "SCALER_WAKE_TOKEN_OWNER must be empty or UID:GID (two numbers)",
            ),
            (
                not self.web_role_arn or self.web_credentials_dir,
                "WEB_ROLE_ARN needs WEB_CREDENTIALS_DIR",
            ),
            (
                900 <= self.web_credentials_duration_s <= 3600,
                "WEB_CREDENTIALS_DURATION_S must be 900-3600",
            ),
            (
                1
                <= self.web_credentials_refresh_s
                < self.web_credentials_duration_s - SDK_REFRESH_WINDOW_S,
                "WEB_CREDENTIALS_REFRESH_S must be >= 1 and less than"
                " WEB_CREDENTIALS_DURATION_S - 900 (the SDK's refresh window)",
            ),
        ]
        checks += [
            (getattr(self, f.name) in f.metadata["choices"], _choose(f))
            for f in dataclasses.fields(self)
            if f.metadata["choices"]
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.job_source_prefixes  # noqa: B018 - raises ConfigError on a bad entry
        self.model_packages  # noqa: B018 - the same for MODELS
        self.prices  # noqa: B018 - raises ConfigError on a bad price
        self.instance_types  # noqa: B018 - raises ConfigError on a bad entry

    @property
    def prices(self) -> Prices:
        """The price table with PRICES_JSON's overrides (runtime.prices)."""
        try:
            return parse_prices(self.prices_json)
        except PriceError as error:
            raise ConfigError(str(error)) from None

    @property
    def instance_types(self) -> tuple[str, ...]:
        """FLEET_INSTANCE_TYPES in order, each checked (empty: the launch template's type)."""
        found = tuple(t.strip() for t in self.fleet_instance_types.split(",") if t.strip())
        for name in found:
            if not _INSTANCE_TYPE.match(name):
                raise ConfigError(f"FLEET_INSTANCE_TYPES: {name[:32]!r} is not an instance type")
        return found

    @property
    def job_source_prefixes(self) -> tuple[str, ...]:
        """JOB_PREFIXES as keys.source_prefix gives them (each ends in '/')."""
        if not self.job_prefixes.strip():
            return ()
        found = []
        for entry in self.job_prefixes.split(","):
            try:
                found.append(keys.source_prefix(entry.strip()))
            except keys.PrefixError as error:
                raise ConfigError(f"JOB_PREFIXES: {entry.strip()[:64]!r} {error}") from None
        return tuple(found)

    @property
    def model_packages(self) -> dict[str, str]:
        """MODELS as {name: package path}, in the order given; ConfigError on a bad entry."""
        found: dict[str, str] = {}
        for entry in filter(None, (e.strip() for e in self.models.split(","))):
            name, sep, path = (part.strip() for part in entry.partition("="))
            if not sep or not path:
                raise ConfigError(f"MODELS: {entry[:64]!r} is not NAME=PATH")
            if not is_model_name(name):
                raise ConfigError(
                    f"MODELS: {name[:64]!r} is not a model name (lowercase letters, digits, . _ -)"
                )
            if path.startswith("s3://") and keys.split_s3_url(path) is None:
                raise ConfigError(f"MODELS: {path[:64]!r} is not s3://BUCKET/PREFIX/")
            if name == self.model or name in found:
                raise ConfigError(f"MODELS: {name!r} is named twice (MODEL is served already)")
            found[name] = path
        return found

    @property
    def model_names(self) -> tuple[str, ...]:
        """Every model this deployment serves: MODEL (the default) first, then MODELS."""
        return (self.model, *self.model_packages)

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.request_queue}{DEAD_LETTER_SUFFIX}"

    @property
    def job_queue(self) -> str:
        """Batch-job images: a lane of their own, served when no interactive request waits."""
        return f"{self.request_queue}{JOB_LANE_SUFFIX}"


def _choose(f: dataclasses.Field) -> str:
    return f"{f.name.upper()} must be {'|'.join(f.metadata['choices'])}"


def _parse(name: str, raw: str, kind: type):
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected {kind.__name__}, got {raw!r}") from None


def load_or_exit(prog: str, env: Mapping[str, str] | None = None) -> Settings:
    """The settings of entry point `prog` (web, worker, scaler, embedded); on a bad value, one
    line `<prog>: bad setting: <reason>` on stderr and exit EXIT_CONFIG, the same for each."""
    try:
        return Settings.from_env(env)
    except ConfigError as error:
        print(f"{prog}: bad setting: {error}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def load_for_tier(tier: str, description: str, argv: list[str] | None = None) -> Settings:
    """`python -m <tier>`'s command line, which takes no option but --help (the tier's settings
    listed under `description`), then the tier's settings as load_or_exit reads them."""
    argparse.ArgumentParser(
        prog=f"python -m {tier}",
        description=f"{description} Settings (environment):",
        epilog=describe((tier,)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)
    return load_or_exit(tier)


def describe(tiers: tuple[str, ...] = TIERS) -> str:
    """The settings of the given tiers as `NAME (default) meaning` lines, for --help."""
    fields = [f for f in dataclasses.fields(Settings) if set(tiers) & set(f.metadata["tiers"])]
    return "\n".join(
        f"  {f.name.upper():<24} {f.default!s:<20} {f.metadata['help']}" for f in fields
    )


def markdown_table() -> str:
    """Every setting as a Markdown table (variable, tier, default, meaning): docs/settings.md."""
    rows = ["| variable | tier | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        meaning = f.metadata["help"].replace("|", "\\|")
        default = f"`{f.default}`" if f.default != "" else "(empty)"
        tiers = "all" if f.metadata["tiers"] == TIERS else ", ".join(f.metadata["tiers"])
        rows.append(f"| `{f.name.upper()}` | {tiers} | {default} | {meaning} |")
    return "\n".join(rows)
