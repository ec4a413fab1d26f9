"""Read template.yaml (the single source of truth) and create its data resources against any AWS endpoint."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Resources the local runtime plays itself rather than creating through an API.
PLAYED_LOCALLY = frozenset({
    "AWS::Serverless::Function", "AWS::Serverless::LayerVersion", "AWS::CloudWatch::Alarm",
    "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Integration", "AWS::ApiGatewayV2::Authorizer",
    "AWS::ApiGatewayV2::Route", "AWS::ApiGatewayV2::Stage", "AWS::Lambda::Permission",
    "AWS::KinesisFirehose::DeliveryStream", "AWS::IAM::Role", "AWS::Logs::LogGroup", "AWS::SNS::Topic",
    "AWS::SNS::Subscription", "AWS::SNS::TopicPolicy", "AWS::KMS::Key",
})
PROVISIONED = frozenset({"AWS::Kinesis::Stream", "AWS::DynamoDB::Table", "AWS::SQS::Queue", "AWS::S3::Bucket",
                         "AWS::S3::BucketPolicy", "AWS::SecretsManager::Secret"})
PSEUDO_PARAMETERS = {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws",
                     "AWS::StackName": "pulse", "AWS::URLSuffix": "amazonaws.com"}


class _CloudFormationLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types: SafeLoader is Any
    """YAML loader that understands the short intrinsic-function tags (!Ref, !GetAtt, !Sub ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path) -> dict[str, Any]:
    template: dict[str, Any] = yaml.load(path.read_text(), Loader=_CloudFormationLoader)
    return template


def resource_name(logical_id: str, prefix: str = "pulse") -> str:
    """EventStream -> pulse-event-stream: stable local names for the template's resources."""
    words = re.findall(r"[A-Z]+(?=[A-Z][a-z]|$)|[A-Z]?[a-z0-9]+", logical_id)
    return "-".join([prefix, *(word.lower() for word in words)])


@dataclass(frozen=True)
class ProvisionedResource:
    logical_id: str
    type: str
    name: str  # stream name, table name, queue URL
    arn: str | None = None


class TemplateResolver:
    """Resolves parameter defaults, conditions (Fn::If and the condition functions) and references to
    provisioned names (enough for data resources and the functions' environment)."""

    def __init__(self, template: dict[str, Any], overrides: dict[str, str] | None = None,
                 resources: dict[str, ProvisionedResource] | None = None):
        self.parameters = {name: str(spec.get("Default", "")) for name, spec in
                           (template.get("Parameters") or {}).items()}
        self.parameters.update(overrides or {})
        self.resources: dict[str, ProvisionedResource] = dict(resources or {})
        self.conditions: dict[str, Any] = dict(template.get("Conditions") or {})

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            raise ValueError(f"the template has no condition {name!r}")
        return self._truth(self.conditions[name])

    def _truth(self, node: Any) -> bool:
        (key, argument), = node.items()
        if key in ("Condition", "Fn::Condition"):
            return self.condition(argument)
        if key == "Fn::Equals":
            return str(self.value(argument[0])) == str(self.value(argument[1]))
        if key == "Fn::Not":
            return not self._truth(argument[0])
        if key == "Fn::And":
            return all(self._truth(part) for part in argument)
        if key == "Fn::Or":
            return any(self._truth(part) for part in argument)
        raise ValueError(f"{key} is not a condition function")

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1:
            (key, argument), = node.items()
            if key == "Ref":
                if argument in self.resources:
                    return self.resources[argument].name
                return self.parameters.get(argument, PSEUDO_PARAMETERS.get(argument, argument))
            if key == "Fn::If":
                return self.value(argument[1] if self.condition(argument[0]) else argument[2])
            if key == "Fn::GetAtt" and argument[0] in self.resources and argument[1] == "Arn":
                return self.resources[argument[0]].arn
            if key == "Fn::Sub" and isinstance(argument, str):
                return re.sub(r"\$\{([^}]+)\}", lambda match: self._substitute(match.group(1)), argument)
            if key.startswith("Fn::"):
                raise ValueError(f"{key} {argument} cannot be resolved by the local stack")
        if isinstance(node, dict):
            return {key: self.value(item) for key, item in node.items()}
        if isinstance(node, list):
            return [self.value(item) for item in node]
        return node


    def _substitute(self, name: str) -> str:
        if name.endswith(".Arn"):
            return str(self.value({"Fn::GetAtt": [name[:-4], "Arn"]}))
        return str(self.value({"Ref": name}))


def data_resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {logical_id: spec for logical_id, spec in template["Resources"].items()
            if spec["Type"] not in PLAYED_LOCALLY}


def provision(template: dict[str, Any], session: Any, *, prefix: str = "pulse",
              overrides: dict[str, str] | None = None) -> dict[str, ProvisionedResource]:
    """Create every data resource of the template (idempotently) through `session`'s clients."""
    resolver = TemplateResolver(template, overrides)
    created: dict[str, ProvisionedResource] = {}
    for logical_id, spec in data_resources(template).items():
        kind = spec["Type"]
        if kind not in PROVISIONED:
            raise NotImplementedError(f"{logical_id}: the local stack cannot create {kind} yet")
        properties = resolver.value(spec.get("Properties") or {})
        name = resource_name(logical_id, prefix)
        created[logical_id] = _CREATORS[kind](session, logical_id, name, properties)
        resolver.resources[logical_id] = created[logical_id]
    return created


def _kinesis_stream(session: Any, logical_id: str, name: str, properties: dict[str, Any]) -> ProvisionedResource:
    kinesis = session.client("kinesis")
    with contextlib.suppress(kinesis.exceptions.ResourceInUseException):
        kinesis.create_stream(StreamName=name, ShardCount=int(properties.get("ShardCount", 1)))
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    hours = properties.get("RetentionPeriodHours")
    if hours and int(hours) > 24:
        kinesis.increase_stream_retention_period(StreamName=name, RetentionPeriodHours=int(hours))
    encryption = properties.get("StreamEncryption")
    if encryption:
        kinesis.start_stream_encryption(StreamName=name, EncryptionType=encryption["EncryptionType"],
                                        KeyId=encryption["KeyId"])
    arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    return ProvisionedResource(logical_id, "AWS::Kinesis::Stream", name, arn)


def _dynamodb_table(session: Any, logical_id: str, name: str, properties: dict[str, Any]) -> ProvisionedResource:
    dynamodb = session.client("dynamodb")
    arguments = {key: properties[key] for key in ("AttributeDefinitions", "KeySchema", "BillingMode",
                                                  "GlobalSecondaryIndexes") if key in properties}
    if "SSESpecification" in properties:
        arguments["SSESpecification"] = {"Enabled": bool(properties["SSESpecification"].get("SSEEnabled"))}
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        dynamodb.create_table(TableName=name, **arguments)
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    ttl = properties.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification={
            "AttributeName": ttl["AttributeName"], "Enabled": True})
    pitr = properties.get("PointInTimeRecoverySpecification")
    if pitr and pitr.get("PointInTimeRecoveryEnabled"):
        dynamodb.update_continuous_backups(TableName=name, PointInTimeRecoverySpecification={
            "PointInTimeRecoveryEnabled": True})
    arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
    return ProvisionedResource(logical_id, "AWS::DynamoDB::Table", name, arn)


def _sqs_queue(session: Any, logical_id: str, name: str, properties: dict[str, Any]) -> ProvisionedResource:
    sqs = session.client("sqs")
    attributes = {key: str(value).lower() if isinstance(value, bool) else str(value)
                  for key, value in properties.items()
                  if key in ("MessageRetentionPeriod", "VisibilityTimeout", "SqsManagedSseEnabled",
                             "DelaySeconds", "MaximumMessageSize", "ReceiveMessageWaitTimeSeconds")}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return ProvisionedResource(logical_id, "AWS::SQS::Queue", url, arn)


def _s3_bucket(session: Any, logical_id: str, name: str, properties: dict[str, Any]) -> ProvisionedResource:
    s3 = session.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=name)
    if (properties.get("VersioningConfiguration") or {}).get("Status") == "Enabled":
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    if "BucketEncryption" in properties:
        rules = [{"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}  # CFN vs API name
                 for rule in properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]]
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
    if "PublicAccessBlockConfiguration" in properties:
        s3.put_public_access_block(Bucket=name,
                                   PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"])
    return ProvisionedResource(logical_id, "AWS::S3::Bucket", name, f"arn:aws:s3:::{name}")


def _s3_bucket_policy(session: Any, logical_id: str, name: str, properties: dict[str, Any]) -> ProvisionedResource:
    """Resolved and checked, but not applied: its statement denies non-TLS access, and the local endpoint is
    plain HTTP (moto enforces bucket policies, so applying it would lock the local stack out)."""
    session.client("s3").head_bucket(Bucket=properties["Bucket"])
    json.dumps(properties["PolicyDocument"])
    return ProvisionedResource(logical_id, "AWS::S3::BucketPolicy", properties["Bucket"])


def _secret(session: Any, logical_id: str, name: str, properties: dict[str, Any]) -> ProvisionedResource:
    """A secret generated as CloudFormation would (GenerateSecretString: random characters of that length);
    its Ref is the ARN. An existing one keeps its value."""
    secrets_manager = session.client("secretsmanager")
    try:
        arn = secrets_manager.describe_secret(SecretId=name)["ARN"]
    except secrets_manager.exceptions.ResourceNotFoundException:
        spec = properties.get("GenerateSecretString") or {}
        if "SecretString" in properties:
            value = properties["SecretString"]
        else:
            alphabet = string.ascii_letters + string.digits
            if not spec.get("ExcludePunctuation"):
                alphabet += "!#$%&()*+,-.:;<=>?@[]^_{|}~"
            value = "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
        arn = secrets_manager.create_secret(Name=name, Description=properties.get("Description", ""),
                                            SecretString=value)["ARN"]
    return ProvisionedResource(logical_id, "AWS::SecretsManager::Secret", arn, arn)


_CREATORS = {
    "AWS::Kinesis::Stream": _kinesis_stream,
    "AWS::DynamoDB::Table": _dynamodb_table,
    "AWS::SQS::Queue": _sqs_queue,
    "AWS::S3::Bucket": _s3_bucket,
    "AWS::S3::BucketPolicy": _s3_bucket_policy,
    "AWS::SecretsManager::Secret": _secret,
}
