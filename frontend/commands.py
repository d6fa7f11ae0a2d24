"""`flask --app frontend ...` commands: migrations, administrators and their API tokens,
programs' API keys.

Alembic is imported inside the db commands: the site itself never needs it,
and it would add a quarter of a second to every start."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import func, select
from werkzeug.security import generate_password_hash

from core.db import User
from core.settings import get_settings
from frontend import api_keys, tokens
from frontend.admin import auth
from frontend.forms import MIN_PASSWORD
from frontend.services import services

db_cli = AppGroup("db", help="The database schema (Alembic migrations in core/migrations).")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Bring the schema up to date; with ADMIN_USERNAME and ADMIN_PASSWORD set,
    also make that first administrator if there is none yet."""
    from core import migrate

    settings = services().settings
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"database at revision {migrate.current(settings.database_url)}")
    now = get_settings()  # the command's own environment, not the app's at its making
    name, password = now.admin_username, now.admin_password
    if name and password:
        with services().db.session() as db:
            if not db.scalar(select(func.count()).select_from(User)):
                _add_admin(name, password)


@db_cli.command("current")
def current() -> None:
    """Print the schema's revision and the newest one."""
    from core import migrate

    click.echo(f"database: {migrate.current(services().settings.database_url)}; "
               f"newest: {migrate.head()}")


@db_cli.command("revision")
@click.option("-m", "--message", required=True)
def revision(message: str) -> None:
    """Write a new migration from the difference between core/db.py and the database."""
    from core import migrate

    migrate.revision(services().settings.database_url, message)


@click.command("create-admin")
@with_appcontext
@click.argument("username")
@click.option("--reset", is_flag=True, help="set a new password for an existing administrator")
def create_admin(username: str, reset: bool) -> None:
    """Make an administrator; the password is asked for, or taken from ADMIN_PASSWORD."""
    # Read now, not when the app was made: the command's own environment counts.
    password = get_settings().admin_password or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True)
    _add_admin(username, password, reset=reset)


def _add_admin(username: str, password: str, *, reset: bool = False) -> None:
    username = username.strip()
    if not username or len(username) > 64:
        raise click.BadParameter("a user name of 1 to 64 characters", param_hint="USERNAME")
    if len(password) < MIN_PASSWORD:
        raise click.UsageError(f"the password needs at least {MIN_PASSWORD} characters")
    with services().db.session() as db:
        user = db.scalar(select(User).where(User.username == username))
        if user and not reset:
            raise click.UsageError(f"{username} exists already; --reset sets a new password")
        if user is None:
            db.add(User(username=username, password_hash=generate_password_hash(password)))
            done = "created"
        else:  # a new password ends every session of the old one
            ended = auth.set_password(db, user, password)
            done = f"updated; {ended} open session{'s' if ended != 1 else ''} ended"
    click.echo(f"administrator {username} {done}")


@click.command("create-token")
@with_appcontext
@click.argument("username")
@click.option("--revoke", is_flag=True, help="revoke every token of this administrator instead")
def create_token(username: str, revoke: bool) -> None:
    """Print a new API token for /admin/api/ (Authorization: Bearer ...) on the last line."""
    try:
        with services().db.session() as db:
            if revoke:
                count = tokens.revoke(db, username)
            else:
                token = tokens.create(db, username)
    except tokens.UnknownAdministrator as exc:
        raise click.UsageError(str(exc)) from None
    if revoke:
        click.echo(f"{count} token{'s' if count != 1 else ''} of {username} revoked")
    else:
        click.echo(f"a new API token for {username} (shown once; only its hash is kept):")
        click.echo(token)


@click.command("create-api-key")
@with_appcontext
@click.argument("name")
@click.option("--per-hour", type=click.IntRange(min=1),
              help="images an hour (default: API_KEY_IMAGES_PER_HOUR, 10,000)")
@click.option("--per-day", type=click.IntRange(min=1),
              help="images a day (default: API_KEY_IMAGES_PER_DAY, 100,000)")
@click.option("--revoke", is_flag=True, help="revoke the key of this name instead")
def create_api_key(name: str, per_hour: int | None, per_day: int | None, revoke: bool) -> None:
    """Print a new key for a program (X-API-Key: ... to /api) on the last line; it has
    quotas of its own instead of its address's, and the full per-request limits."""
    settings = get_settings()  # the command's own environment, not the app's at its making
    try:
        with services().db.session() as db:
            if revoke:
                revoked = api_keys.revoke(db, name)
            else:
                key = api_keys.create(
                    db, name, images_per_hour=per_hour or settings.api_key_images_per_hour,
                    images_per_day=per_day or settings.api_key_images_per_day)
    except api_keys.ApiKeyError as exc:
        raise click.UsageError(str(exc)) from None
    if revoke:
        if not revoked:
            raise click.UsageError(f"there is no live key named {name!r}")
        click.echo(f"API key {name} revoked")
    else:
        click.echo(f"a new API key {name}, for {per_hour or settings.api_key_images_per_hour} "
                   f"images an hour and {per_day or settings.api_key_images_per_day} a day "
                   "(shown once; only its hash is kept):")
        click.echo(key)


def init_app(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(create_admin)
    app.cli.add_command(create_token)
    app.cli.add_command(create_api_key)
