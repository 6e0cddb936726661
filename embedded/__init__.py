"""The embedded stack behind `make up`: moto in server mode plus the tiers as local processes, and
the provisioning of buckets and queues that local emulators (moto, LocalStack) need."""
