"""A Pyramid include used only by tests (``pyramid.includes = tests.e2e.probe``): a view that
yields to the hub and then checks that Pyramid's thread-local still holds *its* request."""
import gevent
from pyramid.threadlocal import get_current_request


def probe(request):
    gevent.sleep(0.2)
    return {"own": get_current_request() is request, "n": request.matchdict["n"],
            "local": type(__import__("pyramid.threadlocal").threadlocal.manager).__mro__[-2].__module__}


def includeme(config):
    config.add_route("probe", "/_probe/{n}")
    config.add_view(probe, route_name="probe", renderer="json")
