"""corso-s3: repositories in S3 and S3-compatible buckets, as a plugin of corso."""

__version__ = "0.1.0"
