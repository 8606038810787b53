"""Item loaders fetch item texts by object id from S3 (a real S3 endpoint) and local files,
in batches, with a per-task cache."""

from __future__ import annotations

import json

import pytest

from trainer.loaders import CachedItemLoader, ItemsNotFound, open_item_loader
from trainer.loaders.s3 import S3Access


@pytest.fixture
def bucket_with_items(s3_endpoint, aws_test_credentials):
    bucket = s3_endpoint.new_bucket()
    client = s3_endpoint.client()
    for index in range(150):
        client.put_object(Bucket=bucket, Key=f"catalog/item-{index}.txt", Body=f"text of item {index}".encode())
    return bucket


def test_s3_loader_reads_items_through_the_key_template(s3_endpoint, bucket_with_items):
    loader = open_item_loader(f"s3://{bucket_with_items}/catalog/{{object_id}}.txt", S3Access(endpoint_url=s3_endpoint.url))

    texts = loader.load_all([f"item-{i}" for i in range(150)])

    assert len(texts) == 150
    assert texts["item-7"] == "text of item 7"


def test_s3_loader_names_missing_items(s3_endpoint, bucket_with_items):
    loader = open_item_loader(f"s3://{bucket_with_items}/catalog/{{object_id}}.txt", S3Access(endpoint_url=s3_endpoint.url))

    with pytest.raises(ItemsNotFound) as raised:
        loader.load_all(["item-1", "no-such-item"])

    assert raised.value.missing == ["no-such-item"]
    assert "no-such-item" in str(raised.value)


def test_s3_loader_reads_a_public_bucket_anonymously(s3_endpoint, bucket_with_items):
    s3_endpoint.client().put_bucket_policy(
        Bucket=bucket_with_items,
        Policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                           "Resource": f"arn:aws:s3:::{bucket_with_items}/*"}],
        }),
    )
    loader = open_item_loader(
        f"s3://{bucket_with_items}/catalog/{{object_id}}.txt", S3Access(endpoint_url=s3_endpoint.url, anonymous=True)
    )

    assert loader.load(["item-3"]) == {"item-3": "text of item 3"}


def test_s3_loader_assumes_a_role(s3_endpoint, bucket_with_items):
    loader = open_item_loader(
        f"s3://{bucket_with_items}/catalog/{{object_id}}.txt",
        S3Access(endpoint_url=s3_endpoint.url, role_arn="arn:aws:iam::123456789012:role/reader", region_name="us-east-1"),
    )

    assert loader.load(["item-4"]) == {"item-4": "text of item 4"}


def test_cache_fetches_each_item_from_the_source_once(s3_endpoint, bucket_with_items, tmp_path):
    source = open_item_loader(f"s3://{bucket_with_items}/catalog/{{object_id}}.txt", S3Access(endpoint_url=s3_endpoint.url))
    cached = CachedItemLoader(source, tmp_path / "task-cache")

    first = cached.load_all([f"item-{i}" for i in range(20)])
    second = cached.load_all([f"item-{i}" for i in range(25)])

    assert first["item-0"] == second["item-0"] == "text of item 0"
    assert cached.fetched == 25  # 20 the first time, only the 5 new ones the second


def test_local_files_and_jsonl_catalogs(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"_id": "d1", "title": "Wings", "text": "lift and drag"}) + "\n")

    assert open_item_loader(f"file://{tmp_path}/{{object_id}}.txt").load(["a", "b"]) == {"a": "alpha"}
    assert open_item_loader(f"file://{catalog}").load(["d1"]) == {"d1": "Wings. lift and drag"}


def test_unknown_scheme_is_refused_with_the_url():
    with pytest.raises(ValueError, match="gs://bucket"):
        open_item_loader("gs://bucket/{object_id}")
