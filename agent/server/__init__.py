"""The HTTP server: lifecycle, the aiohttp app and its routes, middleware, the SDK protocol and SigV4."""
