"""A sample Pyramid app that submits jobs through ``request.jobs`` (the README's example)."""
from pyramid.config import Configurator
from pyramid.view import view_config


@view_config(route_name="reports", request_method="POST", renderer="json")
def build_report(request):
    job = request.jobs.submit("echo", **request.json_body)
    request.response.status_code = 202
    request.response.headers["Location"] = job.url
    request.registry.clients_seen.append(request.jobs)
    return {"job": job.id, "url": job.url}


def main(global_config=None, **settings):
    with Configurator(settings=settings) as config:
        config.include("greenjobs_client.pyramid")
        config.registry.clients_seen = []
        config.add_route("reports", "/reports")
        config.scan(__name__)
        return config.make_wsgi_app()
