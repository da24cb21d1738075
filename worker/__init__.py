"""RQ entry points. Jobs receive ids, build their own engine, and call hub actions."""
