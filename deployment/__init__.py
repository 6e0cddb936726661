"""The real-AWS deployment: `python -m deployment plan | deploy | teardown`, IAM, user-data."""
