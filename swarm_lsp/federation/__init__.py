"""Federation: a swarm spread over several machines (docs/federation.md).

Peers are found (mDNS, a UDP beacon, a manual list), proven (an HMAC challenge with the shared
secret), watched (health checks, latency, load, a circuit breaker) and given voters by the
scheduler. The vote itself stays where the request came in (swarm/engine.py).
"""
