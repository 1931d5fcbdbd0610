"""REST API server of the guest (upstream `api-server-rest`).

`routes` holds the pure rules (features, peer check, inputs, status table),
`app` the aiohttp handlers over the AA and CDH gRPC clients.
"""
