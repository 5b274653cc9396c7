"""SQLAlchemy handlers with a scoped session (tests/frameworks/test_flask_sqlalchemy_handlers.py); the database is
$GREENJOBS_SA_DB."""
import os

from sqlalchemy import Column, Integer, String, create_engine, func, select
from sqlalchemy.orm import declarative_base, scoped_session, sessionmaker

from greenjobs import handler

engine = create_engine(f"sqlite:///{os.environ['GREENJOBS_SA_DB']}")
Session = scoped_session(sessionmaker(bind=engine))
Base = declarative_base()


class Item(Base):
    __tablename__ = "items"
    id = Column(Integer, primary_key=True)
    name = Column(String(50))


Base.metadata.create_all(engine)


@handler("sa.add")
def add(name, commit=True):
    """Adds an item (committed or not); says whether this job found a session already made."""
    fresh = not Session.registry.has()
    Session.add(Item(name=name))
    if commit:
        Session.commit()
    else:
        Session.flush()             # written in the transaction, never committed
    return {"fresh": fresh}


@handler("sa.count")
def count():
    return Session.execute(select(func.count(Item.id))).scalar()
