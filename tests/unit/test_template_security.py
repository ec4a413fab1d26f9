"""template.yaml holds the line: least-privilege IAM for data services, encryption at rest on every data store,
a TLS-only private bucket, an API closed by default (IAM, or JWT behind one parameter), TTL on user state.
Each rule is also shown to catch the mistake it is about, on a damaged copy of the template."""

import copy

import pytest

from pulse_dev.local.template import TemplateResolver, load_template
from tests.paths import REPO_ROOT

TEMPLATE = load_template(REPO_ROOT / "template.yaml")
DATA_SERVICES = ("dynamodb", "s3", "kinesis", "sqs", "firehose", "secretsmanager")


def allow_statements(template):
    """(where, statement) for every Allow statement of every inline policy: SAM function Policies and IAM roles."""
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties") or {}
        policies = properties.get("Policies") or []
        for policy in policies:
            if isinstance(policy, str):  # a managed policy by name: nothing to read, so not allowed
                yield logical_id, {"Effect": "Allow", "Action": "*", "Resource": "*", "Managed": policy}
                continue
            document = policy.get("PolicyDocument", policy)
            for statement in document.get("Statement", []):
                if statement.get("Effect") == "Allow":
                    yield logical_id, statement


def as_list(value):
    return value if isinstance(value, list) else [value]


def wildcard_resource(resource) -> bool:
    """'*' or an ARN with a wildcard in its account, region or resource name. A key prefix under one of the
    template's own buckets (`${Bucket.Arn}/catalog/*`) scopes, it does not widen."""
    if isinstance(resource, dict):
        if "Fn::GetAtt" in resource or "Ref" in resource:
            return False
        text = resource.get("Fn::Sub")
        if isinstance(text, list):
            text = text[0]
        if isinstance(text, str) and text.startswith("${") and ".Arn}/" in text:
            return "*" in text.split(".Arn}", 1)[0]
        return True  # anything else we cannot prove narrow
    return "*" in str(resource)


def security_findings(template) -> list[str]:
    findings = []
    for where, statement in allow_statements(template):
        actions = as_list(statement.get("Action", []))
        data_actions = [a for a in actions if a == "*" or a.split(":", 1)[0] in DATA_SERVICES]
        for action in data_actions:
            if "*" in action:
                findings.append(f"{where}: wildcard action {action}")
        if data_actions:
            findings += [f"{where}: wildcard resource {resource} for {', '.join(data_actions)}"
                         for resource in as_list(statement.get("Resource", [])) if wildcard_resource(resource)]
        if "s3:ListBucket" in actions and not prefixes_listed(statement):
            findings.append(f"{where}: s3:ListBucket without an s3:prefix condition")
    findings += operations_findings(template)
    for logical_id, resource in template["Resources"].items():
        kind, properties = resource["Type"], resource.get("Properties") or {}
        encrypted = {
            "AWS::Kinesis::Stream": lambda p: bool((p.get("StreamEncryption") or {}).get("EncryptionType")),
            "AWS::DynamoDB::Table": lambda p: (p.get("SSESpecification") or {}).get("SSEEnabled") is True,
            "AWS::SQS::Queue": lambda p: p.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in p,
            "AWS::S3::Bucket": lambda p: bool(p.get("BucketEncryption")),
        }.get(kind)
        if encrypted is not None and not encrypted(properties):
            findings.append(f"{logical_id}: {kind} without encryption at rest")
        if kind == "AWS::S3::Bucket":
            block = properties.get("PublicAccessBlockConfiguration") or {}
            if not all(block.get(key) is True for key in ("BlockPublicAcls", "BlockPublicPolicy",
                                                            "IgnorePublicAcls", "RestrictPublicBuckets")):
                findings.append(f"{logical_id}: public access not blocked")
            if not denies_plain_http(template, logical_id):
                findings.append(f"{logical_id}: no bucket policy denying non-TLS access")
    return findings


def prefixes_listed(statement) -> bool:
    """Listing is allowed under named prefixes only (each a `folder/*` pattern)."""
    prefixes = as_list(((statement.get("Condition") or {}).get("StringLike") or {}).get("s3:prefix") or [])
    return bool(prefixes) and all(isinstance(p, str) and p.endswith("/*") and len(p) > 2 for p in prefixes)


def operations_findings(template) -> list[str]:
    """Every function has a log group with a retention, and Errors and Throttles alarms; every alarm notifies;
    the ingest has reserved concurrency and an iterator-age alarm; the DLQ, the API's 5xx and Firehose delivery
    are watched."""
    resources = template["Resources"]
    findings = []
    functions = [name for name, r in resources.items() if r["Type"] == "AWS::Serverless::Function"]
    log_groups = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"]
    alarms = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    for name, alarm in alarms.items():
        if not alarm.get("AlarmActions"):
            findings.append(f"{name}: an alarm with no AlarmActions (nobody is told)")

    def watched(namespace, metric, dimension_value=None) -> bool:
        return any(a.get("Namespace") == namespace and a.get("MetricName") == metric and a.get("AlarmActions")
                   and (dimension_value is None or dimension_value in [d["Value"] for d in a.get("Dimensions", [])])
                   for a in alarms.values())

    for group in log_groups:
        if group.get("RetentionInDays") != {"Ref": "LogRetentionDays"}:
            findings.append(f"{group.get('LogGroupName')}: a log group whose retention is not LogRetentionDays")
    for function in functions:
        group = [g for g in log_groups if g.get("LogGroupName") == {"Fn::Sub": f"/aws/lambda/${{{function}}}"}]
        if not group:
            findings.append(f"{function}: no log group /aws/lambda/<function> (Lambda's own never expires)")
        elif any(not g.get("RetentionInDays") for g in group):
            findings.append(f"{function}: its log group has no RetentionInDays")
        for metric in ("Errors", "Throttles"):
            if not watched("AWS/Lambda", metric, {"Ref": function}):
                findings.append(f"{function}: no {metric} alarm")
    stream_consumers = [name for name in functions if any(
        event["Type"] == "Kinesis" for event in (resources[name]["Properties"].get("Events") or {}).values())]
    for function in stream_consumers:
        if not resources[function]["Properties"].get("ReservedConcurrentExecutions"):
            findings.append(f"{function}: reads the stream without reserved concurrency")
        if not watched("AWS/Lambda", "IteratorAge", {"Ref": function}):
            findings.append(f"{function}: no IteratorAge alarm")
    for kind, namespace, metric, what in (
            ("AWS::SQS::Queue", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "depth"),
            ("AWS::KinesisFirehose::DeliveryStream", "AWS/Firehose", "DeliveryToS3.Success", "delivery"),
            ("AWS::ApiGatewayV2::Api", "AWS/ApiGateway", "5xx", "5xx")):
        for name in (n for n, r in resources.items() if r["Type"] == kind):
            reference = {"Fn::GetAtt": [name, "QueueName"]} if kind == "AWS::SQS::Queue" else {"Ref": name}
            if not watched(namespace, metric, reference):
                findings.append(f"{name}: no {what} alarm")
    for name, topic in ((n, r["Properties"]) for n, r in resources.items() if r["Type"] == "AWS::SNS::Topic"):
        if not topic.get("KmsMasterKeyId") or topic["KmsMasterKeyId"] == "alias/aws/sns":
            findings.append(f"{name}: an SNS topic not encrypted with a key CloudWatch may use")
    return findings


def denies_plain_http(template, bucket: str) -> bool:
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::S3::BucketPolicy" or resource["Properties"]["Bucket"] != {"Ref": bucket}:
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            covered = as_list(statement.get("Resource"))
            if (statement.get("Effect") == "Deny" and statement.get("Principal") == "*"
                    and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
                    and {"Fn::GetAtt": [bucket, "Arn"]} in covered
                    and {"Fn::Sub": f"${{{bucket}.Arn}}/*"} in covered):
                return True
    return False


def test_the_template_has_no_finding():
    assert security_findings(TEMPLATE) == []


def damaged(edit):
    template = copy.deepcopy(TEMPLATE)
    edit(template["Resources"])
    return security_findings(template)


def first_statement(resources, function):
    return resources[function]["Properties"]["Policies"][0]["Statement"][0]


def statement(resources, owner, sid):
    """The statement with this Sid in a function's or a role's inline policies."""
    properties = resources[owner]["Properties"]
    for policy in properties["Policies"]:
        for found in policy.get("PolicyDocument", policy)["Statement"]:
            if found.get("Sid") == sid:
                return found
    raise KeyError(f"{owner} has no statement {sid}")


@pytest.mark.parametrize(("edit", "finding"), [
    (lambda r: first_statement(r, "IngestFunction").update(Action=["dynamodb:*"]), "wildcard action dynamodb:*"),
    (lambda r: first_statement(r, "ApiFunction").update(Action="*"), "wildcard action *"),
    (lambda r: first_statement(r, "IngestFunction").update(Resource="*"), "wildcard resource *"),
    (lambda r: first_statement(r, "TrainFunction").update(Resource={"Fn::Sub": "arn:aws:s3:::*/*"}),
     "wildcard resource"),
    (lambda r: r["ApiFunction"]["Properties"]["Policies"].append("AmazonDynamoDBFullAccess"), "wildcard action *"),
    (lambda r: r["InterestTable"]["Properties"].pop("SSESpecification"), "InterestTable: AWS::DynamoDB::Table "
                                                                         "without encryption at rest"),
    (lambda r: r["EventStream"]["Properties"].pop("StreamEncryption"), "EventStream: AWS::Kinesis::Stream without"),
    (lambda r: r["DeadLetterQueue"]["Properties"].pop("SqsManagedSseEnabled"), "DeadLetterQueue: AWS::SQS::Queue"),
    (lambda r: r["CatalogBucket"]["Properties"].pop("BucketEncryption"), "CatalogBucket: AWS::S3::Bucket without"),
    (lambda r: r["CatalogBucket"]["Properties"]["PublicAccessBlockConfiguration"].update(BlockPublicPolicy=False),
     "CatalogBucket: public access not blocked"),
    (lambda r: r.pop("CatalogBucketPolicy"), "CatalogBucket: no bucket policy denying non-TLS access"),
    (lambda r: first_statement(r, "IngestFunction").update(Resource="*", Action=["secretsmanager:GetSecretValue"]),
     "wildcard resource * for secretsmanager:GetSecretValue"),
    (lambda r: statement(r, "ApiFunction", "ListForMissingKeys").pop("Condition"),
     "ApiFunction: s3:ListBucket without an s3:prefix condition"),
    (lambda r: statement(r, "ArchiveRole", "ListTheArchive")["Condition"]["StringLike"].update({"s3:prefix": "*"}),
     "ArchiveRole: s3:ListBucket without an s3:prefix condition"),
    (lambda r: r.pop("TrainFunctionLogs"), "TrainFunction: no log group"),
    (lambda r: r["ApiFunctionLogs"]["Properties"].pop("RetentionInDays"),
     "ApiFunction: its log group has no Retention"),
    (lambda r: r["DeadLettersAlarm"]["Properties"].pop("AlarmActions"),
     "DeadLettersAlarm: an alarm with no AlarmActions"),
    (lambda r: r.pop("DeadLettersAlarm"), "DeadLetterQueue: no depth alarm"),
    (lambda r: r.pop("IngestIteratorAgeAlarm"), "IngestFunction: no IteratorAge alarm"),
    (lambda r: r.pop("Api5xxAlarm"), "HttpApi: no 5xx alarm"),
    (lambda r: r.pop("ArchiveDeliveryAlarm"), "ArchiveDeliveryStream: no delivery alarm"),
    (lambda r: r.pop("CatalogThrottlesAlarm"), "CatalogFunction: no Throttles alarm"),
    (lambda r: r.pop("IngestErrorsAlarm"), "IngestFunction: no Errors alarm"),
    (lambda r: r["IngestFunction"]["Properties"].pop("ReservedConcurrentExecutions"),
     "IngestFunction: reads the stream without reserved concurrency"),
    (lambda r: r["AlarmTopic"]["Properties"].update(KmsMasterKeyId="alias/aws/sns"), "AlarmTopic: an SNS topic not"),
    (lambda r: r["HttpApiAccessLogs"]["Properties"].update(RetentionInDays=30),
     "a log group whose retention is not LogRetentionDays"),
])
def test_each_rule_catches_its_mistake(edit, finding):
    assert any(finding in line for line in damaged(edit)), damaged(edit)


PUBLIC_ROUTES = {"GET /health", "GET /openapi.json"}


def resolved_routes(template, parameters):
    """route key -> (authorization type, authorizer) as CloudFormation resolves them for these parameters."""
    resolver = TemplateResolver(template, parameters)
    return {route["Properties"]["RouteKey"]: (resolver.value(route["Properties"]["AuthorizationType"]),
                                              route["Properties"].get("AuthorizerId"))
            for route in template["Resources"].values() if route["Type"] == "AWS::ApiGatewayV2::Route"}


def api_auth_mode(template, parameters):
    variables = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    return TemplateResolver(template, parameters).value(variables["PULSE_API_AUTH"])


@pytest.mark.parametrize("parameters, kind, mode", [
    ({}, "AWS_IAM", "iam"),  # the audit: the default deployment was open to the internet
    ({"JwtIssuer": "https://issuer.example"}, "JWT", "jwt"),
    ({"JwtIssuer": "https://issuer.example", "OpenApi": "true"}, "JWT", "jwt"),
    ({"OpenApi": "true"}, "NONE", "none"),
])
def test_closed_by_default_every_route_but_health_and_openapi_needs_the_chosen_authorization(parameters, kind, mode):
    routes = resolved_routes(TEMPLATE, parameters)
    assert {key for key, (auth, _) in routes.items() if auth == "NONE"} == (
        set(routes) if kind == "NONE" else PUBLIC_ROUTES)
    assert {auth for key, (auth, _) in routes.items() if key not in PUBLIC_ROUTES} == {kind}
    assert api_auth_mode(TEMPLATE, parameters) == mode  # the function enforces the per-user rule of that mode
    if kind == "JWT":
        authorizer = TEMPLATE["Resources"]["HttpApiJwtAuthorizer"]
        assert authorizer["Condition"] == "UseJwt" and authorizer["Properties"]["AuthorizerType"] == "JWT"
        assert authorizer["Properties"]["JwtConfiguration"]["Issuer"] == {"Ref": "JwtIssuer"}


def test_a_route_added_without_authorization_is_caught():
    template = copy.deepcopy(TEMPLATE)
    template["Resources"]["HttpApiDebugRoute"] = {"Type": "AWS::ApiGatewayV2::Route", "Properties": {
        "ApiId": {"Ref": "HttpApi"}, "RouteKey": "GET /debug", "AuthorizationType": "NONE"}}
    routes = resolved_routes(template, {})
    assert {key for key, (auth, _) in routes.items() if auth == "NONE"} != PUBLIC_ROUTES


def test_each_user_route_has_its_own_throttle_and_access_is_logged_without_paths():
    stage = TEMPLATE["Resources"]["HttpApiStage"]["Properties"]
    routes = set(resolved_routes(TEMPLATE, {})) - PUBLIC_ROUTES - {"$default"}
    assert set(stage["RouteSettings"]) == routes
    assert stage["RouteSettings"]["DELETE /users/{user_id}"]["ThrottlingRateLimit"] == {"Ref": "ApiDeleteRateLimit"}
    assert TEMPLATE["Parameters"]["ApiDeleteRateLimit"]["Default"] < TEMPLATE["Parameters"]["ApiReadRateLimit"][
        "Default"]
    log_format = stage["AccessLogSettings"]["Format"]
    assert "$context.routeKey" in log_format and "$context.requestId" in log_format
    # the path and the token's claims would put user ids in clear text into the access log
    assert "$context.path" not in log_format and "$context.authorizer.claims" not in log_format


def test_inactive_users_expire_by_ttl_and_traces_do_not_keep_responses():
    table = TEMPLATE["Resources"]["InterestTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert TEMPLATE["Parameters"]["InactiveUserTtlDays"]["Default"] > 0
    environment = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert environment["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false"  # X-Ray would store user ids


def test_the_alarms_notify_a_topic_an_email_can_subscribe_to_and_logs_expire():
    parameters = TEMPLATE["Parameters"]
    assert parameters["AlarmEmail"]["Default"] == ""
    subscription = TEMPLATE["Resources"]["AlarmEmailSubscription"]
    assert subscription["Condition"] == "SubscribeAlarmEmail" and subscription["Properties"]["Protocol"] == "email"
    assert TEMPLATE["Conditions"]["SubscribeAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}
    assert parameters["LogRetentionDays"]["Default"] == 30 and 30 in parameters["LogRetentionDays"]["AllowedValues"]
    ingest = TEMPLATE["Resources"]["IngestFunction"]["Properties"]
    assert ingest["ReservedConcurrentExecutions"] == {"Fn::If": ["ReservePerShard", {"Ref": "ShardCount"},
                                                                 {"Ref": "IngestReservedConcurrency"}]}
    assert ingest["Events"]["Behaviour"]["Properties"]["ParallelizationFactor"] == 1  # one per shard suffices


def test_the_archive_expires_and_pulse_forget_covers_every_prefix_raw_events_are_written_to():
    from pulse.events.archive import RAW_EVENT_PREFIXES

    retention = TEMPLATE["Parameters"]["ArchiveRetentionDays"]
    assert retention["MinValue"] == 1 and retention["MaxValue"] >= retention["Default"]
    assert retention["Default"] > TEMPLATE["Parameters"]["TrainingDays"]["Default"]  # the training window fits
    rules = TEMPLATE["Resources"]["CatalogBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    expiry = next(rule for rule in rules if rule.get("ExpirationInDays") == {"Ref": "ArchiveRetentionDays"})
    assert expiry["Status"] == "Enabled" and expiry["NoncurrentVersionExpiration"]["NoncurrentDays"] <= 1
    firehose = TEMPLATE["Resources"]["ArchiveDeliveryStream"]["Properties"]["ExtendedS3DestinationConfiguration"]
    for written in (firehose["Prefix"], firehose["ErrorOutputPrefix"]):
        assert written.startswith(expiry["Prefix"]), f"{written} never expires"
        assert written.startswith(RAW_EVENT_PREFIXES), f"pulse forget does not read {written}"


# The DynamoDB calls each function's store makes (pulse.interest.store: reads, a batch read, versioned puts;
# DELETE writes a tombstone through the same conditional put): moto does not check IAM, so the roles are checked here.
STORE_CALLS = {"IngestFunction": {"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:PutItem"},
               "ApiFunction": {"dynamodb:GetItem", "dynamodb:PutItem"}}


@pytest.mark.parametrize("function", sorted(STORE_CALLS))
def test_each_function_may_make_the_dynamodb_calls_its_store_makes_and_no_others(function):
    granted = {action for where, statement in allow_statements(TEMPLATE) if where == function
               for action in as_list(statement["Action"]) if action.startswith("dynamodb:")}
    assert granted == STORE_CALLS[function]
