"""`python -m deployment plan | deploy | teardown | template`: thin commands around the stack.

Every template parameter is a flag (`--image-tag`, `--web-cidr`, ...), read from the template
itself, so the commands cannot drift from it. Credentials and region come from the usual AWS
environment or profile; AWS_ENDPOINT_URL points them elsewhere (the tests use moto).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import boto3
import yaml
from botocore.exceptions import BotoCoreError, ClientError

from deployment import template
from deployment.stack import DeployError, Stack


def _flag(parameter: str) -> str:
    return "--" + re.sub(r"(?<!^)(?=[A-Z])", "-", parameter).lower()


def _given(args) -> dict[str, str]:
    names = yaml.safe_load(template.PATH.read_text())["Parameters"]
    given = {name: getattr(args, _flag(name)[2:].replace("-", "_"), None) for name in names}
    return {name: str(value) for name, value in given.items() if value is not None}


def _stack(args) -> Stack:
    # AWS_REGION as the other tiers read it; boto3 itself reads only AWS_DEFAULT_REGION.
    region = os.environ.get("AWS_REGION") or None
    services = ("cloudformation", "ec2", "s3", "sqs")
    clients = (boto3.client(service, region_name=region) for service in services)
    return Stack(args.stack_name, *clients)


def cmd_plan(args) -> int:
    changes = _stack(args).plan(_given(args))
    for change in changes:
        print(change)
    if not changes:
        print(f"No changes: stack {args.stack_name} matches the template and parameters.")
    else:
        print(f"Plan: {len(changes)} change(s). Nothing was changed; `deploy` applies them.")
    return 0


def cmd_deploy(args) -> int:
    stack = _stack(args)
    changes = stack.deploy(_given(args))
    if not changes:
        print(f"No changes: stack {args.stack_name} is up to date.")
        return 0
    outputs = stack.cloudformation.describe_stacks(StackName=args.stack_name)["Stacks"][0]
    for output in outputs.get("Outputs", []):
        print(f"{output['OutputKey']}: {output['OutputValue']}")
    print(f"Deployed: {len(changes)} change(s) to stack {args.stack_name}.")
    return 0


def cmd_teardown(args) -> int:
    if not _stack(args).teardown(keep_data=args.keep_data):
        print(f"Nothing to remove: no stack named {args.stack_name}.")
    else:
        print(f"Removed stack {args.stack_name}.")
    return 0


def cmd_template(args) -> int:
    template.PATH.write_text(template.render())
    print(f"wrote {template.PATH}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deployment", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    parameters = yaml.safe_load(template.PATH.read_text())["Parameters"]
    for name, run, text in (
        ("plan", cmd_plan, "show the change set deploy would execute; changes nothing"),
        ("deploy", cmd_deploy, "create or update the stack, printing its events"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        _stack_name(command)
        for key, spec in parameters.items():
            default = f" (default {spec['Default']})" if "Default" in spec else ""
            command.add_argument(
                _flag(key),
                metavar=key,
                help=f"{spec['Description']}{default}; an update "
                "keeps the current value if not given",
            )
        command.set_defaults(run=run)
    command = commands.add_parser(
        "teardown",
        help="terminate the fleet the scaler launched, then delete the stack and its data",
    )
    _stack_name(command)
    command.add_argument(
        "--keep-data", action="store_true", help="keep the buckets and what is in them"
    )
    command.set_defaults(run=cmd_teardown)
    command = commands.add_parser("template", help=f"regenerate {template.PATH.name}")
    command.set_defaults(run=cmd_template, stack_name="")
    return parser


def _stack_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stack-name", default="classifier", help="the stack's name (default %(default)s)"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except DeployError as error:
        print(f"deployment {args.command}: {error}", file=sys.stderr)
    except (ClientError, BotoCoreError) as error:
        print(f"deployment {args.command}: AWS refused: {error}", file=sys.stderr)
    return 1
