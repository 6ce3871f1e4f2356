"""Adapters to AWS services (SQS, Secrets Manager), each over an injected boto3 client."""
