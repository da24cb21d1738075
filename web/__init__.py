"""The aiohttp edge: staff UI, REST API, provider webhooks, socket.io, health and metrics."""
