"""A web process's use of the SDK, run where the web's credentials are handed over: it signs,
then waits for boto3 to move to the renewed session on its own (prints each identity as JSON)."""

from __future__ import annotations

WEB_SDK = """
import json, sys, time
import boto3
session = boto3.session.Session()
sts = session.client("sts", region_name="us-east-1")
first = session.get_credentials().get_frozen_credentials().access_key
print(json.dumps({"arn": sts.get_caller_identity()["Arn"], "key": first}), flush=True)
deadline = time.monotonic() + 120
while session.get_credentials().get_frozen_credentials().access_key == first:
    if time.monotonic() > deadline:
        sys.exit("the SDK kept its first session")
    time.sleep(0.2)
renewed = session.get_credentials().get_frozen_credentials().access_key
print(json.dumps({"arn": sts.get_caller_identity()["Arn"], "key": renewed}), flush=True)
"""
