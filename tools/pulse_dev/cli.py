"""The `pulse` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

LOCAL_RUNTIME_FILE = Path(".pulse/local.json")


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["bench"]:  # before anything imports NumPy: the bench pins BLAS to one thread first
        from pulse_dev.bench import main as bench

        return bench(arguments[1:])
    from pulse.settings import TrainSettings  # the defaults the help names

    parser = argparse.ArgumentParser(prog="pulse", description="Pulse: real-time interest capture")
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="the embedded local stack").add_subparsers(dest="action", required=True)
    up = local.add_parser("up", help="start moto, create the template's resources, serve the API (foreground)")
    up.add_argument("--aws-port", type=int, default=4566)
    up.add_argument("--api-port", type=int, default=3000)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--no-catalog", action="store_true", help="do not publish the MovieLens-100K catalogue")
    up.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                    help="template parameter override (repeatable), e.g. --parameter IngestBatchSize=500")
    up.add_argument("--log-level", default="INFO")
    up.add_argument("--project", type=Path, help="the project folder, with template.yaml and functions/ (default: "
                    "the nearest one from the working directory up)")
    up.add_argument("--jwt", action="store_true",
                    help="play a JWT issuer and put the API behind the JWT authorizer (JwtIssuer = the local "
                         "issuer; tokens from `pulse local token`)")
    up.add_argument("--train-every", type=float, metavar="SECONDS",
                    help="run the training function every this many seconds (default: the template's schedule, "
                         "one day; 0 never). pulse train runs one on demand")

    token = local.add_parser("token", help="a token signed by the running local stack's issuer (pulse local up "
                                           "--jwt) for a user; prints it")
    token.add_argument("user_id")
    token.add_argument("--admin", action="store_true", help="add the admin scope (AdminScope, pulse/admin)")
    token.add_argument("--scope", action="append", default=[], help="another scope (repeatable)")
    token.add_argument("--audience", default="pulse", help="aud claim (default pulse, JwtAudience's default)")
    token.add_argument("--minutes", type=float, default=60.0, help="lifetime (default 60)")

    for name, help_text in (("eval", "MovieLens-100K through the real pipeline: quality, interest shift, freshness"),
                            ("demo", "install-free tour: replay MovieLens-100K, show users and recommendations")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--half-lives", help="pin the time scales' half-lives in seconds, e.g. "
                             "short=60,long=86400 (default: learned by each training, as deployed)")
        command.add_argument("--blend-weights", help="pin the time scales' weights, e.g. short=1,long=0.2 "
                             "(default: learned)")
        command.add_argument("--rating-weighting", choices=("stars", "flat"), help="pin it (default: learned)")
        command.add_argument("--type-weights", help="e.g. rate=2,view=0.5")
        command.add_argument("--text-weight", type=float, help="pin the text block's share (default: learned)")
        command.add_argument("--collab-weight", type=float, help="pin the collaborative block's share "
                             "(default: learned)")
        command.add_argument("--popularity-weight", type=float, help="pin the trending prior's weight in the "
                             "score, 0-1 (default: learned; 0 turns it off)")
        command.add_argument("--retrain-days", type=float,
                             help="run the training every this many simulated days (default 1, the template's "
                                  "schedule; 0 never)")
        command.add_argument("--batch-size", type=int, help="IngestBatchSize (default: the template's)")
        command.add_argument("--protocol", choices=("honest", "replay-then-train"),
                             help="honest (default): trainings during the replay, questions before each held-out "
                                  "rating; replay-then-train: the whole replay, one training, then the questions "
                                  "(use with --retrain-days 0)")
        command.add_argument("--out-dir", type=Path, default=Path(".pulse"), help="where the JSON report and the "
                             "picture go (default .pulse)")
        command.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                             help="any other template parameter override (repeatable), e.g. TrainingDays=90")

    catalog = commands.add_parser("catalog", help="catalogue commands").add_subparsers(dest="action", required=True)
    build = catalog.add_parser("build", help="validate, embed and publish a JSON Lines catalogue")
    build.add_argument("file", type=Path, help="JSON Lines: item_id, title, text, categories, available, ...")
    build.add_argument("--bucket", help="target bucket (default: $PULSE_BUCKET, else the local stack's)")
    build.add_argument("--prefix", help="key prefix of the catalogue versions (default: $PULSE_CATALOG_PREFIX, "
                                         "else the deployment's default)")
    build.add_argument("--skip-invalid", action="store_true", help="publish the valid lines, report the others")
    build.add_argument("--batch-size", type=int, default=256)

    trainer = commands.add_parser("train", help="learn the hybrid item space from the event archive and publish it")
    trainer.add_argument("--bucket", help="catalogue/archive bucket (default: $PULSE_BUCKET, else the local stack's)")
    trainer.add_argument("--days", type=int, help="archive window in days, ending today (default: "
                         f"$PULSE_TRAINING_DAYS, else {TrainSettings.default('training_days')}; the newest "
                         "$PULSE_TRAINING_MAX_EVENTS events of it)")
    trainer.add_argument("--until", type=lambda text: __import__("datetime").date.fromisoformat(text),
                         help="last archive day (YYYY-MM-DD, default today, UTC)")
    trainer.add_argument("--seed", type=int, default=0, help="random seed of the factorization (default 0)")
    trainer.add_argument("--force", action="store_true",
                         help="publish even with too little data or a candidate worse than the serving version")

    forget = commands.add_parser("forget", help="erase users from the event archive and its error output, every "
                                                "object version (DELETE /users/{id} erases their live state)")
    forget.add_argument("user_ids", nargs="+", metavar="USER_ID")
    forget.add_argument("--bucket", help="archive bucket (default: $PULSE_BUCKET, else the local stack's)")

    dlq = commands.add_parser("dlq", help="the dead-letter queue").add_subparsers(dest="action", required=True)
    replay = dlq.add_parser("replay", help="put the parked records (after a fix) back on the stream as new records; "
                                           "each event is applied once; records still invalid stay parked")
    replay.add_argument("--queue-url", help="default: $PULSE_DLQ_URL, else the local stack's")
    replay.add_argument("--stream", help="default: $PULSE_STREAM, else the local stack's")
    replay.add_argument("--max", type=int, help="replay at most this many messages")

    commands.add_parser("soak", help="sustained load on the local stack, then reconcile (.pulse/soak.json)",
                        add_help=False)
    commands.add_parser("bench", help="speed and cost of every hot path, side by side (.pulse/bench.json)",
                        add_help=False)

    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["soak"]:
        from pulse_dev.local.soak import main as soak

        return soak(argv[1:])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "local":
        return local_token(args) if args.action == "token" else local_up(args)
    if args.command in ("eval", "demo"):
        from pulse_dev.local.demo import run

        return run(args.command, args)
    if args.command == "catalog":
        return catalog_build(args)
    if args.command == "train":
        return train(args)
    if args.command == "forget":
        return forget_users(args)
    if args.command == "dlq":
        return replay_dead_letters(args)
    return 2


def train(args: argparse.Namespace) -> int:
    """The training function's job, run here: settings (policy, pins) from the PULSE_* environment variables."""
    from pulse.catalog.store import S3CatalogRepository
    from pulse.settings import TrainSettings
    from pulse.training.job import TrainingError, deployment_options, train_catalog

    bucket = target_bucket(args.bucket)
    options = deployment_options(TrainSettings.from_env(), force=args.force)
    if args.days is not None:
        options["days"] = args.days
    try:
        result = train_catalog(S3CatalogRepository(bucket), bucket, until=args.until, seed=args.seed, **options)
    except TrainingError as error:
        print(f"pulse train: {error}", file=sys.stderr)
        return 1
    report = result.report
    if result.published:
        print(f"catalogue {result.version} published ({result.reason}; serving was {result.base_version})")
    else:
        print(f"training refused, {result.base_version} keeps serving: {result.reason} (--force publishes anyway)")
    print(f"data: {result.events} events of {result.users} users, {result.warm_items}/{result.items} items used "
          f"together, {report['data']['held_out_users']} held-out users; archive: {result.archive.lines} lines, "
          f"{result.archive.invalid} invalid, {result.archive.duplicates} duplicates skipped; "
          f"{result.seconds['total']:.1f} s")
    if "candidate" in report:
        for side in ("serving", "candidate", "popularity"):
            print(f"  {side:<10} Hit@10 {report[side]['hit_at_10']:.4f}  NDCG@10 {report[side]['ndcg_at_10']:.4f}"
                  f"  ({report[side]['users']} users)")
        print(f"  settings chosen: {json.dumps(report['settings']['chosen'])}, blocks "
              f"{report['settings']['text_weight']:g}/{report['settings']['collab_weight']:g}")
    print(f"report: s3://{bucket}/{result.report_key}")
    return 0 if result.published else 3


def forget_users(args: argparse.Namespace) -> int:
    from pulse.events.archive import RAW_EVENT_PREFIXES, erase_users

    bucket = target_bucket(args.bucket)
    stats = erase_users(bucket, set(args.user_ids))
    print(f"s3://{bucket} ({', '.join(RAW_EVENT_PREFIXES)}): {stats.versions_read} object versions read, "
          f"{stats.objects_rewritten} objects rewritten, {stats.lines_removed} lines of {len(args.user_ids)} "
          f"user(s) removed; {stats.versions_deleted} object versions holding them deleted")
    return 0


def replay_dead_letters(args: argparse.Namespace) -> int:
    import time

    from pulse.events.dead_letters import replay_dead_letters as replay
    from pulse.settings import Settings

    queue = local_target(args.queue_url, "PULSE_DLQ_URL", "dlq", "--queue-url")
    stream = local_target(args.stream, "PULSE_STREAM", "stream", "--stream")
    report = replay(queue, stream, limits=Settings.from_env().time_limits(time.time()), max_messages=args.max)
    for problem in report.problems:
        print(f"kept: {problem}", file=sys.stderr)
    print(f"{report.messages} dead letters read: {report.resubmitted} records put back on {stream} as new records "
          f"({report.replayed_messages} messages deleted), {report.kept} kept in the queue")
    return 0 if report.kept == 0 else 1


def local_up(args: argparse.Namespace) -> int:
    import signal
    import threading

    from pulse_dev.local.runtime import LocalRuntime

    logging.getLogger("pulse").setLevel(logging.INFO)
    parameters = dict(pair.split("=", 1) for pair in args.parameter)
    runtime = LocalRuntime(host=args.host, aws_port=args.aws_port, api_port=args.api_port, parameters=parameters,
                           log_level=args.log_level, train_every_seconds=args.train_every,
                           local_issuer=args.jwt, **({"root": args.project.resolve()} if args.project else {})).start()
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):  # Ctrl-C and kill both stop the stack cleanly
        signal.signal(number, lambda *_: stop.set())
    try:
        if not args.no_catalog:
            from pulse_dev.local.demo import publish_movielens

            print(f"catalogue {publish_movielens(runtime)} published (MovieLens-100K)")
        runtime.write_description(LOCAL_RUNTIME_FILE)
        print(json.dumps(runtime.describe(), indent=2))
        print(f"AWS APIs on {runtime.stack.endpoint}, the API on {runtime.api_url}; wrote {LOCAL_RUNTIME_FILE}. "
              "Ctrl-C stops.", flush=True)
        while not stop.wait(0.5):  # wakes up to let signal handlers run whatever the other threads do
            pass
    except KeyboardInterrupt:
        pass
    finally:
        runtime.stop()
        LOCAL_RUNTIME_FILE.unlink(missing_ok=True)
        print("local stack stopped")
    return 0


def local_token(args: argparse.Namespace) -> int:
    from pulse_dev.local.gateway_auth import LocalIssuer

    local = json.loads(LOCAL_RUNTIME_FILE.read_text()) if LOCAL_RUNTIME_FILE.exists() else {}
    if not local.get("jwt_issuer"):
        raise SystemExit(f"no local JWT issuer: start the local stack with `pulse local up --jwt` "
                         f"({LOCAL_RUNTIME_FILE} {'names none' if local else 'does not exist'})")
    issuer = LocalIssuer(local["jwt_issuer"], Path(local["jwt_issuer_key"]))
    scopes = [*args.scope, *([local.get("jwt_admin_scope") or "pulse/admin"] if args.admin else [])]
    print(issuer.token(args.user_id, audience=args.audience, scopes=scopes, seconds=args.minutes * 60))
    return 0


def target_bucket(explicit: str | None) -> str:
    """--bucket, else $PULSE_BUCKET, else the running local stack's (its endpoint then becomes the default)."""
    return local_target(explicit, "PULSE_BUCKET", "bucket", "--bucket")


def local_target(explicit: str | None, variable: str, key: str, option: str) -> str:
    """The option, else the environment variable, else the running local stack's resource (its endpoint then
    becomes the default)."""
    value = explicit or os.environ.get(variable)
    if value:
        return value
    if LOCAL_RUNTIME_FILE.is_file():
        local = json.loads(LOCAL_RUNTIME_FILE.read_text())
        os.environ.setdefault("AWS_ENDPOINT_URL", local["aws_endpoint"])
        os.environ.setdefault("AWS_DEFAULT_REGION", local["region"])
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(name, "pulse-local")
        target: str = local[key]
        return target
    raise SystemExit(f"no {key}: pass {option}, set {variable}, or start the local stack (make local)")


def catalog_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from pulse.catalog.build import InvalidCatalogError, parse_catalog_lines, publish_catalog
    from pulse.catalog.store import S3CatalogRepository
    from pulse.settings import Settings
    from pulse_encoder import load_encoder

    if not args.file.is_file():
        raise SystemExit(f"{args.file}: no such file")
    lines = args.file.read_bytes().splitlines()
    prefix = args.prefix if args.prefix is not None else (os.environ.get("PULSE_CATALOG_PREFIX", "").strip()
                                                          or Settings.default("catalog_prefix"))
    repository = S3CatalogRepository(target_bucket(args.bucket), prefix)
    items, _ = parse_catalog_lines(lines)
    try:
        with tqdm(total=len(items), desc="embedding items", unit="item") as progress:
            result = publish_catalog(lines, load_encoder(), repository, skip_invalid=args.skip_invalid,
                                     progress=progress.update, batch_size=args.batch_size)
    except InvalidCatalogError as error:
        for line, problem in error.problems[:50]:
            print(f"{args.file}:{line}: {problem}", file=sys.stderr)
        print(f"{len(error.problems)} invalid line(s): nothing published (--skip-invalid publishes the rest)",
              file=sys.stderr)
        return 1
    for line, problem in result.skipped:
        print(f"{args.file}:{line}: skipped: {problem}", file=sys.stderr)
    state = "published" if result.new_files else "already published; CURRENT points at it"
    print(f"catalogue {result.version}: {result.items} items {state} in s3://{repository.bucket}/{repository.prefix}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
