"""`rvps-tool`: register, query, list and delete reference values over the RVPS gRPC API."""
