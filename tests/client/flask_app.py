"""A sample Flask app that submits jobs through the greenjobs extension (the README's example)."""
from flask import Flask, jsonify, request

from greenjobs_client.flask import Greenjobs

jobs = Greenjobs()


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(config or {})
    jobs.init_app(app)

    @app.post("/reports")
    def build_report():
        job = jobs.submit("echo", **request.get_json())
        return jsonify(job=job.id, url=job.url), 202, {"Location": job.url}

    return app
