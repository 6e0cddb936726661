"""What the tiers share: settings, AWS clients, the message schema, provisioning, embedded AWS."""
