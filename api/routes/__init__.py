"""HTTP routers of the results API, one module per resource."""
