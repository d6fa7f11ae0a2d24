"""`flask --app frontend ...` commands: migrations, administrators and their API tokens.

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
from frontend import tokens
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


def init_app(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(create_admin)
    app.cli.add_command(create_token)
