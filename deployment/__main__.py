"""`python -m deployment`: plan, deploy or tear down the service's CloudFormation stack."""

import sys

from deployment.cli import main

if __name__ == "__main__":
    sys.exit(main())
