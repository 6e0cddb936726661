"""What every tier imports, and nothing else: settings, AWS clients, the message schema, logs,
CloudWatch metrics, periodic threads and retry. The one owner of each contract between tiers."""
