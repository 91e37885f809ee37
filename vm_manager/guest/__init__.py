"""Everything done inside a container's VM through its node: paths, files, commands, search,
templates, and the map from node errors to domain errors.

``paths`` imports nothing of Django, so the drivers (and a contract test with the node agent)
can use it; the other modules need the ORM and the channel layer.
"""
