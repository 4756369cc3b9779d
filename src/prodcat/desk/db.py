"""The desk's database: tables, engine set-up and migration on open.

SQLite (a file, WAL mode, full fsync) is the default; a postgresql:// URL uses PostgreSQL through
psycopg 3. The schema is owned by Alembic migrations shipped in this package and applied every time
the database is opened, so a desk never runs against a schema older than its code.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

DEFAULT_DB = "sqlite:///prodcat-desk.db"
ROLES = ("reviewer", "admin")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class QueueItem(Base):
    """One product the model has seen: queued for people (review / unknown), auto-labelled, or
    accepted and queued anyway as a blind audit (`audit`: the desk shows it like any other)."""

    __tablename__ = "items"

    product_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    title: Mapped[str] = mapped_column(Text, default="")
    image_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision: Mapped[str] = mapped_column(String(16))
    queued: Mapped[bool] = mapped_column(Boolean, index=True)
    category: Mapped[str] = mapped_column(Text)  # the model's answer
    probability: Mapped[float] = mapped_column(Float)  # its calibrated confidence at queue time
    # The desk's order (lowest first): the probability for review / unknown; for an audit, the
    # probability of a random product queued for review, so audits hide among them.
    priority: Mapped[float] = mapped_column(Float)
    audit: Mapped[bool] = mapped_column(Boolean, default=False)
    gate_case: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "image+text"...
    ood_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    top_json: Mapped[str] = mapped_column(Text)  # [[path, probability], ...] up to 5
    # A label check (decision "check", `prodcat audit --to-desk`): the catalogue's own label,
    # offered among the options unmarked; None for every other item.
    given_category: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Why the model answered so (`prodcat.model.explain`), for queued products: JSON or None.
    explanation_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_version: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ReviewAnswer(Base):
    """A person's category for a product; `agreed` = it equals the model's top suggestion."""

    __tablename__ = "answers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("items.product_id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(200), index=True)
    category: Mapped[str] = mapped_column(Text)
    new_category: Mapped[bool] = mapped_column(Boolean, default=False)
    model_suggestion: Mapped[str] = mapped_column(Text)
    agreed: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(32), default="desk")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("product_id", "reviewer", name="uq_answer_reviewer"),)


class Lease(Base):
    """A product handed to a reviewer until `expires_at`; nobody else gets that answer slot."""

    __tablename__ = "leases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("items.product_id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)

    __table_args__ = (UniqueConstraint("product_id", "user_id", name="uq_lease_user"),)


class Skip(Base):
    __tablename__ = "skips"

    product_id: Mapped[str] = mapped_column(ForeignKey("items.product_id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class LabelStudioTask(Base):
    """A product written out as a Label Studio task: what was sent (`fingerprint`), so a second
    export adds only new products; `task_id` once Label Studio's id is known (sync or import)."""

    __tablename__ = "labelstudio_tasks"

    product_id: Mapped[str] = mapped_column(ForeignKey("items.product_id"), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    exported_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    project: Mapped[int | None] = mapped_column(Integer, nullable=True)


class LabelStudioAnnotation(Base):
    """One Label Studio annotation as last imported, keyed by its id (`key`): a later import
    compares `updated_at` to replace an edited answer; a skip keeps `skipped` and no answer."""

    __tablename__ = "labelstudio_annotations"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    task_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    product_id: Mapped[str] = mapped_column(ForeignKey("items.product_id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(DateTime)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    lead_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    answer_id: Mapped[int | None] = mapped_column(
        ForeignKey("answers.id", ondelete="SET NULL"), nullable=True
    )


Index("ix_items_queue_order", QueueItem.queued, QueueItem.priority, QueueItem.product_id)


def normalise_url(url: str) -> str:
    """postgresql:// means psycopg 3 (SQLAlchemy's default driver name is psycopg2)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if "://" not in url:  # a plain file name
        return f"sqlite:///{Path(url).resolve()}"
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _sqlite_setup(engine)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_setup(engine: Engine) -> None:
    """WAL for concurrent readers; synchronous=FULL so a committed answer is on disk; and
    BEGIN IMMEDIATE so every transaction takes the write lock up front (two reviewers asking for
    the next product are serialised instead of both reading the same free product)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy's BEGIN below decide
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(url: str) -> None:
    """Bring the schema to the newest migration (creates it on an empty database)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    config.attributes["url"] = normalise_url(url)
    command.upgrade(config, "head")


class Database:
    """An opened, migrated desk database."""

    def __init__(self, url: str = DEFAULT_DB, *, run_migrations: bool = True) -> None:
        self.url = normalise_url(url)
        if run_migrations:
            migrate(self.url)
        self.engine = make_engine(self.url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def session(self) -> Session:
        return self.sessions()

    def get_setting(self, key: str, default: str | None = None) -> str | None:
        with self.session() as s:
            row = s.get(Setting, key)
            return row.value if row else default

    def set_setting(self, key: str, value: str) -> None:
        with self.session() as s, s.begin():
            _put_setting(s, key, value)

    def secret_key(self) -> str:
        """The cookie-signing key, made once and kept in the database so sessions survive a
        restart of the server."""
        with self.session() as s, s.begin():
            row = s.get(Setting, "secret_key")
            if row is None:
                row = Setting(key="secret_key", value=secrets.token_urlsafe(48))
                s.add(row)
            return row.value

    def dispose(self) -> None:
        self.engine.dispose()


def _put_setting(s: Session, key: str, value: str) -> None:
    row = s.get(Setting, key)
    if row is None:
        s.add(Setting(key=key, value=value))
    else:
        row.value = value


def put_setting(s: Session, key: str, value: str) -> None:
    _put_setting(s, key, value)
