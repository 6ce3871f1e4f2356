"""Adapters to AWS services (SQS, Secrets Manager), each over an injected botocore client;
every client is built by :func:`mailcore.aws.clients.aws_client`."""
