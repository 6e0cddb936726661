"""`python -m deployment plan | deploy | teardown`: the real-AWS deployment's commands."""

from __future__ import annotations

import argparse
import logging
import sys

from botocore.exceptions import BotoCoreError, ClientError

from deployment.deploy import Change, Clients, DeployError, Options, deploy
from deployment.teardown import teardown
from runtime.settings import Settings


def _options(args) -> Options:
    return Options(
        name=args.name,
        instance_type=getattr(args, "instance_type", Options.instance_type),
        ami=getattr(args, "ami", ""),
        web_cidrs=tuple(getattr(args, "web_cidr", None) or ()),
        web_image=getattr(args, "web_image", ""),
    )


def _count(changes: list[Change], action: str) -> int:
    return sum(1 for change in changes if change.action == action)


def _guarded(command):
    """One line on stderr and exit 1 for what AWS or the checks refuse; no traceback."""

    def run(args, settings: Settings) -> int:
        logging.getLogger("botocore").setLevel(logging.WARNING)  # the changes are the output
        try:
            return command(args, settings, Clients.for_settings(settings))
        except DeployError as error:
            print(f"deployment {args.command}: {error}", file=sys.stderr)
        except (ClientError, BotoCoreError) as error:
            print(f"deployment {args.command}: AWS refused: {error}", file=sys.stderr)
        return 1

    return run


@_guarded
def cmd_plan(args, settings: Settings, clients: Clients) -> int:
    changes = deploy(settings, _options(args), clients, apply=False, report=print)
    if not changes:
        print("No changes: the deployment matches the settings.")
    else:
        print(
            f"Plan: {_count(changes, 'create')} to create, {_count(changes, 'update')} to update. "
            "Nothing was changed; `python -m deployment deploy` applies it."
        )
    return 0


@_guarded
def cmd_deploy(args, settings: Settings, clients: Clients) -> int:
    changes = deploy(settings, _options(args), clients, apply=True, report=print)
    if not changes:
        print("No changes: the deployment is up to date.")
    else:
        print(
            f"Deployed: {_count(changes, 'create')} created, {_count(changes, 'update')} updated."
        )
    return 0


@_guarded
def cmd_teardown(args, settings: Settings, clients: Clients) -> int:
    apply = not args.dry_run
    changes = teardown(
        settings, _options(args), clients, apply=apply, keep_data=args.keep_data, report=print
    )
    deleted = _count(changes, "delete")
    if not deleted:
        print(f"Nothing to remove: no resource is tagged as deployment {args.name!r}.")
    else:
        print(f"{'Removed' if apply else 'Would remove'} {deleted} resource(s).")
    return 0


def add_commands(commands) -> None:
    """Register plan, deploy and teardown on `python -m deployment`'s subparsers."""
    epilog = (
        "Names come from the settings (INPUT_BUCKET, REQUEST_QUEUE, LAUNCH_TEMPLATE, FLEET_NAME, "
        "WORKER_IMAGE, ...); credentials and region from the usual AWS environment or profile."
    )
    for name, run, text in (
        ("plan", cmd_plan, "show what deploy would create or change; changes nothing"),
        ("deploy", cmd_deploy, "create or update the AWS deployment (idempotent)"),
    ):
        parser = commands.add_parser(name, help=text, description=text, epilog=epilog)
        _common(parser)
        parser.add_argument(
            "--instance-type", default=Options.instance_type, help="workers' EC2 instance type"
        )
        parser.add_argument(
            "--ami", default="", help="workers' image id (default: latest Amazon Linux 2023)"
        )
        parser.add_argument(
            "--web-cidr",
            action="append",
            metavar="CIDR",
            help="let this range reach the web host's port (repeatable; default: none)",
        )
        parser.add_argument(
            "--web-image",
            default="",
            help="the web host's image (web and scaler); if in ECR, the web role may pull it",
        )
        parser.set_defaults(run=run)
    parser = commands.add_parser(
        "teardown",
        help="remove what deploy created (only resources tagged with the deployment name)",
        epilog=epilog,
    )
    _common(parser)
    parser.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    parser.add_argument(
        "--keep-data", action="store_true", help="keep the buckets and queues (and what is in them)"
    )
    parser.set_defaults(run=cmd_teardown)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        default=Options.name,
        help="deployment name: tags everything and prefixes roles and groups (default %(default)s)",
    )
