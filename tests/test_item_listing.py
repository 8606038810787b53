"""Item loaders list the ids of a whole catalog, so an index refresh can embed every item (on a real
S3 endpoint for the S3 loader)."""

from __future__ import annotations

import json

from trainer.loaders import open_item_loader
from trainer.loaders.local import InlineTextLoader
from trainer.loaders.s3 import S3Access


def test_an_s3_prefix_lists_the_ids_its_key_template_matches(s3_endpoint, aws_test_credentials):
    bucket = s3_endpoint.new_bucket()
    client = s3_endpoint.client()
    for key in ("catalog/a.txt", "catalog/b.txt", "catalog/nested/c.txt", "catalog/d.json", "other/e.txt"):
        client.put_object(Bucket=bucket, Key=key, Body=b"text")

    loader = open_item_loader(f"s3://{bucket}/catalog/{{object_id}}.txt", S3Access(endpoint_url=s3_endpoint.url))

    assert sorted(loader.list_ids()) == ["a", "b"]


def test_a_folder_of_files_and_a_jsonl_catalog_list_their_ids(tmp_path):
    for name in ("item-1.txt", "item-2.txt", "notes.md", "item-.txt"):
        (tmp_path / name).write_text("x")
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"id": i, "text": "t"}) + "\n" for i in ("p", "q")))

    assert open_item_loader(f"file://{tmp_path}/item-{{object_id}}.txt").list_ids() == ["1", "2"]
    assert open_item_loader(catalog.as_uri()).list_ids() == ["p", "q"]
    assert InlineTextLoader({"x": "1"}).list_ids() == ["x"]
