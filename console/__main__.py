"""Command line of the console: `python -m console {run,init,tls,web,serve,worker,migrate,
create-user,presets,backup,restore}`."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

DEFAULT_INSTANCE = Path(os.environ.get("LOA_INSTANCE", "instance"))


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


def cmd_web(args: argparse.Namespace) -> int:
    from console.app import create_app
    from console.settings import load_settings

    settings = load_settings(args.instance)
    app = create_app(settings)
    tls = settings.tls if settings.tls and settings.tls.web else None
    app.run(
        host=settings.web_host, port=settings.web_port, threaded=True, use_reloader=False,
        ssl_context=(str(tls.cert_file), str(tls.key_file)) if tls else None,
    )  # fmt: skip
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """A production instance: settings with fresh secrets, the broker's config and accounts,
    the schema and the first admin; no demo commune. Run again, it changes nothing."""
    from console.accounts import ensure_first_admin
    from console.broker import BrokerProcess, DynsecAdmin
    from console.db import Database, upgrade
    from console.devrun import broker_settings
    from console.settings import write_new_instance

    settings = write_new_instance(
        args.instance, broker_port=args.broker_port, web_port=args.web_port
    )
    upgrade(settings.database_url)
    b = settings.broker
    with BrokerProcess(broker_settings(settings)), DynsecAdmin(
        b.host, b.port, b.admin_username, b.admin_password.get_secret_value()
    ) as admin:
        admin.provision_console(b.console_username, b.console_password.get_secret_value())
    db = Database(settings.database_url)
    try:
        with db.session() as session:
            password = ensure_first_admin(session)
    finally:
        db.dispose()
    print(f"instance ready: {args.instance.resolve()}")
    if password:
        print(f"first admin login (shown once): admin / {password}")
    return 0


def cmd_tls(args: argparse.Namespace) -> int:
    """The instance's CA (made once, kept) and a new server certificate (renewal: run again);
    the first time, a [tls] section in config.toml; then the broker's config is rewritten."""
    from urllib.parse import urlsplit

    from console.broker import write_config
    from console.devrun import broker_settings
    from console.settings import add_tls_section, load_settings
    from console.tls import TLS_DIR, TlsError, TlsFiles, issue_server_certificate

    settings = load_settings(args.instance)
    files = TlsFiles(settings.instance_dir.resolve() / TLS_DIR)
    if settings.tls is not None and settings.tls.cert_file != files.cert:
        print(f"error: [tls] in config.toml names {settings.tls.cert_file}; this command "
              f"makes {files.cert} only (renew your own certificate your own way)",
              file=sys.stderr)  # fmt: skip
        return 2
    names = args.name or [
        settings.broker.public_host, urlsplit(settings.public_base_url).hostname or ""
    ]
    try:
        issued = issue_server_certificate(files, [*names, "localhost", "127.0.0.1"])
    except TlsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    added = settings.tls is None
    settings = add_tls_section(
        settings.instance_dir,
        {
            "ca_file": str(files.ca_cert),
            "cert_file": str(files.cert),
            "key_file": str(files.key),
            "broker_port": args.broker_port,
            "web": args.web,
        },
    )
    assert settings.tls is not None
    write_config(broker_settings(settings))
    print(f"CA certificate: {files.ca_cert} ({'new' if issued.ca_created else 'kept'})")
    print(f"  sha256 fingerprint {issued.ca_fingerprint}")
    print(f"server certificate: {files.cert}, valid until {issued.not_after:%Y-%m-%d}")
    print(f"  for {', '.join(issued.names)}")
    if added:
        print("config.toml: [tls] added")
    port = settings.tls.broker_port
    print(f"broker TLS listener: {f'port {port}' if port else 'off'}; "
          f"web HTTPS: {'on' if settings.tls.web else 'off (behind a proxy)'}")  # fmt: skip
    print("Restart the broker and the web to use it. Devices registered before get TLS with a "
          "new config file (reissue their credentials); see docs/security.md.")  # fmt: skip
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Production web: gunicorn, `web_workers` processes of `web_threads` threads each."""
    from console.settings import load_settings
    from console.wsgi import gunicorn_options, serve

    settings = load_settings(args.instance)
    options = gunicorn_options(
        settings, bind=args.bind, workers=args.workers, threads=args.threads,
        access_log=args.access_log,
    )  # fmt: skip
    return serve(settings, options)


def cmd_worker(args: argparse.Namespace) -> int:
    from console.settings import load_settings
    from console.worker import build_worker

    worker = build_worker(load_settings(args.instance))
    worker.start()
    _wait_for_signal()
    worker.stop()
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from console.db import upgrade
    from console.settings import load_settings

    upgrade(load_settings(args.instance).database_url)
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from console.accounts import AccountError, create_user
    from console.db import Database
    from console.models import Role
    from console.settings import load_settings

    password = os.environ.get("LOA_NEW_PASSWORD") or getpass.getpass("Password: ")
    db = Database(load_settings(args.instance).database_url)
    try:
        with db.session() as session:
            create_user(session, args.username, password, Role(args.role))
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"user {args.username} ({args.role}) created")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from audio_library import AudioError, Voice
    from console.db import Database
    from console.models import AudioFile, Preset
    from console.presets import PRESETS, ensure_presets
    from console.settings import load_settings

    settings = load_settings(args.instance)
    db = Database(settings.database_url)
    try:
        started = time.monotonic()
        try:
            created = ensure_presets(db, settings.media_dir, voice=Voice(args.voice))
        except AudioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{len(created)} preset(s) generated in {time.monotonic() - started:.1f} s")
        with db.session() as session:
            stmt = select(Preset, AudioFile).join(AudioFile)
            rows = {p.key: (p, a) for p, a in session.execute(stmt)}
        for spec in PRESETS:
            preset, audio = rows[spec.key]
            origin = "generated" if preset.updated_by is None else "replaced by staff"
            print(
                f"  {spec.key:15} {preset.title:22} {audio.duration_ms / 1000:5.1f} s  "
                f"{audio.sha256[:12]}  {origin}"
            )
    finally:
        db.dispose()
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from console.backup import BackupError, create_backup, describe
    from console.settings import load_settings

    settings = load_settings(args.instance)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out or settings.instance_dir / "backups" / f"loa-backup-{stamp}.tar.gz"
    try:
        manifest = create_backup(settings, out)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    describe(manifest, sys.stdout)
    print(f"written to {out} (it holds secrets: keep it private)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from console.backup import BackupError, restore_backup

    try:
        result = restore_backup(
            args.archive,
            args.instance,
            database_url=args.database_url,
            broker_port=args.broker_port,
            web_port=args.web_port,
        )
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored {sum(result.rows.values())} rows and {result.media_files} audio files "
        f"into {result.instance_dir} (schema {result.revision}, then upgraded)"
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from console.devrun import run

    return run(args.instance, welcome_delay_s=args.welcome_delay)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console", description=__doc__)
    parser.add_argument("--instance", type=Path, default=DEFAULT_INSTANCE)
    parser.add_argument("--log-level", default=os.environ.get("LOA_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="broker + web + worker + simulated fleet (`make run`)")
    run.add_argument(
        "--welcome-delay", type=float, default=20.0, help="seconds until the test announcement"
    )
    sub.add_parser("web", help="the web console and JSON API (development server)")
    serve = sub.add_parser("serve", help="the web console in production (gunicorn, see deploy.md)")
    serve.add_argument("--bind", help="HOST:PORT (default: web_host:web_port of the settings)")
    serve.add_argument("--workers", type=int, help="processes (default: web_workers)")
    serve.add_argument("--threads", type=int, help="threads per process (default: web_threads)")
    serve.add_argument("--access-log", default="-", help="a file, or - for stdout (default)")
    sub.add_parser("worker", help="the ONE scheduler + ingest process")
    init = sub.add_parser("init", help="a new production instance (no demo), see deploy.md")
    init.add_argument("--web-port", type=int, default=8080)
    init.add_argument("--broker-port", type=int, default=1883)
    tls = sub.add_parser(
        "tls", help="CA and server certificate for the broker and web (renew: run again)"
    )
    tls.add_argument(
        "--name", action="append",
        help="a host name or IP address devices and browsers use (repeat; default: "
        "[broker] public_host and public_base_url's host)",
    )  # fmt: skip
    tls.add_argument(
        "--broker-port", type=int, default=8883, help="the broker's TLS port (0: no listener)"
    )
    tls.add_argument("--web", action="store_true", help="`serve` answers HTTPS itself")
    sub.add_parser("migrate", help="upgrade the database schema")
    create = sub.add_parser("create-user", help="add a staff account (password asked)")
    create.add_argument("username")
    create.add_argument("--role", choices=["admin", "operator", "viewer"], default="operator")
    presets = sub.add_parser(
        "presets", help="generate the missing emergency presets (staff replacements are kept)"
    )
    presets.add_argument(
        "--voice", choices=["vi", "vi-vn-x-central", "vi-vn-x-south"], default="vi"
    )
    backup = sub.add_parser("backup", help="database, audio, broker accounts, settings: one file")
    backup.add_argument("--out", type=Path, help="the .tar.gz (default: backups/ in the instance)")
    restore = sub.add_parser("restore", help="restore a backup into a NEW instance directory")
    restore.add_argument("archive", type=Path)
    restore.add_argument("--database-url", help="an empty database (default: SQLite in it)")
    restore.add_argument("--broker-port", type=int, help="another broker port than the backup's")
    restore.add_argument("--web-port", type=int, help="another web port than the backup's")
    args = parser.parse_args(argv)
    _logging(args.log_level)
    handlers = {
        "run": cmd_run,
        "web": cmd_web,
        "serve": cmd_serve,
        "init": cmd_init,
        "tls": cmd_tls,
        "worker": cmd_worker,
        "migrate": cmd_migrate,
        "create-user": cmd_create_user,
        "presets": cmd_presets,
        "backup": cmd_backup,
        "restore": cmd_restore,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
