"""Everything done inside a container's VM through its node: ``access`` (reaching its driver),
``paths`` (the one normaliser), ``files`` (the one write path, bounded reads, capped listings,
downloads), ``commands``, ``search``, ``templates`` and ``revisions``. Node failures become
domain errors through the one map in ``vm_manager.errors``.

``paths`` imports nothing of Django, so the drivers (and a contract test with the node agent)
can use it; the other modules need the ORM and the channel layer.
"""
