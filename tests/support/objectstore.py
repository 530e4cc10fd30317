"""The object-store tier's S3 as tests see it: the bucket, its keys, and `storage.objectStore` for a job."""

from __future__ import annotations

from dataclasses import dataclass

ACCESS_KEY_ID = "AKIDISTILLERYTEST"
SECRET_ACCESS_KEY = "distillery-test-secret-never-logged"


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str
    client: object  # boto3 S3 client, to set up and inspect the bucket

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, body: bytes) -> str:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return self.uri(key)

    def keys(self, prefix: str = "") -> list[str]:
        found = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix).get("Contents", [])
        return sorted(item["Key"] for item in found)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


def store(s3: S3) -> dict:
    """`storage.objectStore` for the test server."""
    return {"endpointUrl": s3.endpoint, "region": "us-east-1"}
