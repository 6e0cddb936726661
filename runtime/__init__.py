"""What every tier imports, and nothing else: settings, AWS clients, the message schema and the
storage keys derived from it (messages, keys), the AWS resources' shared tags and encryption
(resources), SQS calls (sqs), failure logging (failures), retry, logs, CloudWatch metrics,
periodic threads and the percentile (stats). The one owner of each contract between tiers."""
