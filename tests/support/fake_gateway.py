"""The one stand-in for web.resources.Gateway in unit tests of the web app."""

from __future__ import annotations

from runtime.messages import Result


class FakeGateway:
    """Answers every upload with `outcome` (a Result; an exception is raised instead; None: a
    tabby of model "m"), and remembers what it was given."""

    def __init__(self, outcome: Result | Exception | None = None):
        self.outcome = outcome
        self.seen: list = []
        self.request_id: str | None = None

    def classify(self, upload, request_id=None):
        self.seen.append(upload)
        self.request_id = request_id
        if isinstance(self.outcome, Exception):
            raise self.outcome
        outcome = self.outcome or Result(
            id="c" * 32, filename=upload.filename, label="tabby", model="m"
        )
        return outcome, {"total": 1.0}

    def result(self, request_id):
        return None
