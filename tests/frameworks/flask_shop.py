"""A Flask app and handlers that need its application context (tests/frameworks/test_flask_sqlalchemy_handlers.py)."""
from flask import Flask, current_app, g

from greenjobs import handler

app = Flask("flaskshop")
app.config["SHOP_NAME"] = "the flask shop"


@handler("flaskshop.whoami")
def whoami(mark):
    """Reads the app's config through current_app; ``g`` starts empty for every job."""
    inherited = g.get("mark")
    g.mark = mark
    return {"app": current_app.name, "shop": current_app.config["SHOP_NAME"], "inherited": inherited}
