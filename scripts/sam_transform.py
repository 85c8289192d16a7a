"""Runs SAM's own transform (the samtranslator package) over template.yaml, offline, and prints
the CloudFormation it generates as JSON. tests/it/template.rs asserts on the result: linting does not
see the resources SAM generates (the Function URL's permissions, the scheduler, the policies).

Usage: python scripts/sam_transform.py template.yaml [Name=Value ...]
"""

import json
import os
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    """The template names no AWS managed policies by name, so nothing needs looking up in IAM."""

    def load(self):
        return {}


def main():
    path = sys.argv[1]
    parameters = dict(arg.split("=", 1) for arg in sys.argv[2:])
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(path) as f:
        template = yaml_parse(f.read())
    # The transform wants code in S3, as `sam deploy` leaves it after uploading.
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = "s3://bucket/code.zip"
    template.get("Globals", {}).get("Function", {}).pop("CodeUri", None)
    parameters.setdefault("AWS::Region", "us-east-1")
    parameters.setdefault("AWS::AccountId", "123456789012")
    parameters.setdefault("AWS::StackName", "prefect-nf-test")
    parameters.setdefault("AWS::Partition", "aws")
    output = transform(template, parameters, NoManagedPolicies())
    json.dump(output, sys.stdout, indent=2, default=str)


if __name__ == "__main__":
    main()
