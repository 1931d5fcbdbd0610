"""aiohttp adapter of the KBS: routing, handlers, the error table and middleware.

Handlers only translate HTTP to the services in `kbs.protocol` and
`kbs.resources` and back; no protocol rule lives here.
"""
