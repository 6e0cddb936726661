"""The worker throughput metric: workers publish it, the scaler reads the fleet's recent average."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

NAMESPACE = "ElasticClassifier"
THROUGHPUT_METRIC = "ImagesPerSecond"
FLEET_DIMENSION = "Fleet"
_PERIOD_S = 60  # CloudWatch's finest standard resolution


def _dimensions(fleet_name: str) -> list[dict]:
    return [{"Name": FLEET_DIMENSION, "Value": fleet_name}]


def publish_throughput(cloudwatch, fleet_name: str, img_s: float) -> None:
    """Report one worker's rate while busy: images / seconds spent on batches, idle time excluded.

    The scaler sizes the fleet by what one instance can do, so an idle worker must not report 0.
    """
    if not img_s > 0:
        return
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": THROUGHPUT_METRIC,
                "Dimensions": _dimensions(fleet_name),
                "Value": float(img_s),
                "Unit": "Count/Second",
            }
        ],
    )


def read_throughput(
    cloudwatch, fleet_name: str, window_s: float = 300.0, now: datetime | None = None
) -> float | None:
    """The per-worker images/s averaged over every report in the window; None without reports."""
    now = now or datetime.now(timezone.utc)
    reply = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=THROUGHPUT_METRIC,
        Dimensions=_dimensions(fleet_name),
        StartTime=now - timedelta(seconds=window_s),
        # A minute of slack: a worker's clock may run a little ahead of ours.
        EndTime=now + timedelta(seconds=_PERIOD_S),
        Period=_PERIOD_S,
        Statistics=["Average", "SampleCount"],
    )
    samples = sum(p["SampleCount"] for p in reply["Datapoints"])
    if samples <= 0:
        return None
    # Weight each period's average by its report count: the mean over all reports.
    return sum(p["Average"] * p["SampleCount"] for p in reply["Datapoints"]) / samples


# Accepted uploads per second: the web tier publishes them, the scaler reads the arrival rate.
ARRIVALS_METRIC = "RequestsAccepted"
_MAX_DATUMS = 1000  # PutMetricData's limit per call


def publish_arrivals(cloudwatch, fleet_name: str, counts: dict[int, int]) -> None:
    """Publish accepted uploads per whole epoch second, at one-second (high) resolution."""
    datums = [
        {
            "MetricName": ARRIVALS_METRIC,
            "Dimensions": _dimensions(fleet_name),
            "Timestamp": datetime.fromtimestamp(second, timezone.utc),
            "Value": float(count),
            "Unit": "Count",
            "StorageResolution": 1,
        }
        for second, count in sorted(counts.items())
        if count > 0
    ]
    for start in range(0, len(datums), _MAX_DATUMS):
        cloudwatch.put_metric_data(
            Namespace=NAMESPACE, MetricData=datums[start : start + _MAX_DATUMS]
        )


def read_arrivals(
    cloudwatch, fleet_name: str, span_s: float, now: datetime | None = None
) -> list[tuple[float, float]]:
    """(epoch second, accepted uploads) for every second with uploads in the last span_s."""
    now = now or datetime.now(timezone.utc)
    reply = cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName=ARRIVALS_METRIC,
        Dimensions=_dimensions(fleet_name),
        StartTime=now - timedelta(seconds=span_s),
        EndTime=now + timedelta(seconds=1),
        Period=1,
        Statistics=["Sum"],
    )
    return sorted((p["Timestamp"].timestamp(), p["Sum"]) for p in reply["Datapoints"])
