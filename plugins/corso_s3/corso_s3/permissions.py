"""Which IAM permission authorises each S3 operation the plugin sends.

One table serves the error messages ("access denied: S3 UploadPart … needs s3:PutObject"), the
check-access probes and the README's policy section, so they cannot disagree. The mapping is
what the least-privilege tests prove against an IAM-enforcing server (tests/test_s3_iam.py).
"""

OPERATION_PERMISSION = {
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "DeleteObject": "s3:DeleteObject",
    "GetBucketLocation": "s3:GetBucketLocation",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "PutObjectRetention": "s3:PutObjectRetention",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "ListObjectVersions": "s3:ListBucketVersions",
}

#: The policy a repository needs (without Object Lock): every permission above that the
#: plugin's operations use, and nothing else.
REQUIRED = (
    "s3:PutObject",
    "s3:GetObject",
    "s3:ListBucket",
    "s3:DeleteObject",
    "s3:GetBucketLocation",
    "s3:AbortMultipartUpload",
    "s3:ListBucketMultipartUploads",
)

#: What a bucket with Object Lock needs on top of REQUIRED.
OBJECT_LOCK = ("s3:PutObjectRetention", "s3:GetBucketObjectLockConfiguration")

#: Optional, for a versioned bucket: to tell the user what it keeps (GetBucketVersioning) and
#: to delete the old versions of the format blobs after update-passphrase (the other two).
#: Without them corso says nothing, or says what it could not delete.
VERSIONED = ("s3:GetBucketVersioning", "s3:ListBucketVersions", "s3:DeleteObjectVersion")

#: In Corso's documented policy but never used: corso-s3 keeps each part's ETag itself and
#: never lists the parts of an upload.
UNNECESSARY = ("s3:ListMultipartUploadParts",)


def permission_for(operation: str) -> str:
    return OPERATION_PERMISSION.get(operation, f"s3:{operation}")
