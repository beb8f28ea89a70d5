"""The HTTP edge: routes, middleware (request IDs, metrics, keys, body limits), the error table, schemas and the
uvicorn server. It calls the core (app/core) and nothing calls it but app/main.py."""
