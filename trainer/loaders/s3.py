"""Items as S3 objects, one object per item, found through a key template such as
``prefix/{object_id}.txt``. Credentials follow boto3's chain (environment, profile, instance role),
an explicit role to assume, or anonymous access for public buckets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from trainer.loaders.base import ItemLoader


@dataclass(frozen=True)
class S3Access:
    endpoint_url: str | None = None
    role_arn: str | None = None
    anonymous: bool = False
    region_name: str | None = None


def s3_client(access: S3Access):
    config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
    if access.anonymous:
        config = config.merge(Config(signature_version=UNSIGNED))
        return boto3.client("s3", endpoint_url=access.endpoint_url, region_name=access.region_name, config=config)
    if access.role_arn:
        sts = boto3.client("sts", endpoint_url=access.endpoint_url, region_name=access.region_name)
        credentials = sts.assume_role(RoleArn=access.role_arn, RoleSessionName="embedding-studio")["Credentials"]
        return boto3.client(
            "s3",
            endpoint_url=access.endpoint_url,
            region_name=access.region_name,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
            config=config,
        )
    return boto3.client("s3", endpoint_url=access.endpoint_url, region_name=access.region_name, config=config)


class S3ItemLoader(ItemLoader):
    def __init__(self, bucket: str, key_template: str, access: S3Access = S3Access(), workers: int = 16):
        if "{object_id}" not in key_template:
            raise ValueError(f"S3 key template {key_template!r} must contain {{object_id}}")
        self.bucket = bucket
        self.key_template = key_template
        self.workers = workers
        self._client = s3_client(access)

    def load(self, object_ids: list[str]) -> dict[str, str]:
        # GETs are latency-bound, so a batch is fetched in parallel rather than one after another.
        with ThreadPoolExecutor(max_workers=min(self.workers, max(1, len(object_ids)))) as pool:
            texts = pool.map(self._get, object_ids)
        return {object_id: text for object_id, text in zip(object_ids, texts) if text is not None}

    def list_ids(self) -> list[str]:
        head, tail = self.key_template.split("{object_id}", 1)
        ids = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=head):
            for entry in page.get("Contents", []):
                key = entry["Key"]
                middle = key[len(head):len(key) - len(tail) if tail else None]
                if key.endswith(tail) and middle and "/" not in middle:
                    ids.append(middle)
        return ids

    def _get(self, object_id: str) -> str | None:
        key = self.key_template.format(object_id=object_id)
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return body.decode("utf-8")
