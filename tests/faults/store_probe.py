"""Test-only Pyramid include (``pyramid.includes = tests.faults.store_probe``): cap the store's size,
as a full disk would, and lift the cap again."""


def store_limit(request):
    pages = int(request.GET["pages"])
    store = request.registry.greenjobs_runtime.store
    if pages == 0:       # "the disk is full from now on": cap at the current size
        pages = store._db.write(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    store._db.write(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages}"))
    return {"max_page_count": pages}


def includeme(config):
    config.add_route("test_store_limit", "/_test/store_limit")
    config.add_view(store_limit, route_name="test_store_limit", renderer="json")
