# expect: pytest lazy='raise'
# mypy: ignore-errors
"""A lazy relationship read in a loop: one query per author (N+1), or MissingGreenlet under asyncio.

keel's `Base` gives every relationship `lazy="raise"`, so the first unplanned load fails the test.
"""

from sqlalchemy import ForeignKey, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.core.db import Base


class Author(Base):
    """An author with books."""

    __tablename__ = "guardrail_author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list["Book"]] = relationship(back_populates="author")


class Book(Base):
    """A book by one author."""

    __tablename__ = "guardrail_book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("guardrail_author.id"))
    author: Mapped[Author] = relationship(back_populates="books")


async def test_authors_are_listed_with_their_books() -> None:
    """Every author is listed with the titles of their books."""
    engine = create_async_engine("sqlite+aiosqlite://")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        async with AsyncSession(engine) as session:
            session.add(Author(name="Ann", books=[Book(title="A"), Book(title="B")]))
            await session.commit()
        async with AsyncSession(engine) as session:
            authors = (await session.scalars(select(Author))).all()
            titles = {author.name: [book.title for book in author.books] for author in authors}
    finally:
        await engine.dispose()

    assert titles == {"Ann": ["A", "B"]}
