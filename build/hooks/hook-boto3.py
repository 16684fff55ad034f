"""boto3, client API only: the agent never uses resources, so none of boto3/data (resource
definitions) and none of the dynamodb/ec2/s3 helper modules the contrib hook adds."""

from __future__ import annotations

hiddenimports: list[str] = []
datas: list[tuple[str, str]] = []
